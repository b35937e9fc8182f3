"""What needs a real server: ingestion rate, latency over HTTP, a worker's peak memory.

gunicorn (ingest_http.gunicorn) runs wsgi:app with sync workers and the server's durable
defaults, on 127.0.0.1 and a free port, one server per database; each is always stopped
before a function returns. Request bodies and the timed client come from benchmarks.ingest_http.
"""
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import requests

from . import ingest_http


@dataclass(frozen=True)
class ServedFigures:
    http_median_ms: dict  # case name -> median over HTTP, one sync worker
    peak_rss_mb: float  # that worker's peak resident memory (VmHWM) after every query


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def served(targets: list[tuple[str, str]], urls: dict, rounds: int) -> list[ServedFigures]:
    """Per (database, key): each URL's median over HTTP to a worker of its own, then that
    worker's peak RSS. All servers run at once and are timed in the same rounds, round-robin,
    so a busy neighbour slows every database alike."""
    with ExitStack() as stack:
        servers = [stack.enter_context(ingest_http.gunicorn(database, 1)) for database, _ in targets]
        sessions = [stack.enter_context(requests.Session()) for _ in targets]
        for session, (_, key) in zip(sessions, targets):
            session.headers["Authorization"] = f"Bearer {key}"
        samples = [{name: [] for name in urls} for _ in targets]
        for round_number in range(rounds + 1):  # the first round warms up
            for (_, base), session, sample in zip(servers, sessions, samples):
                for name, url in urls.items():
                    started = time.perf_counter()
                    response = session.get(base + url, timeout=120)
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        raise RuntimeError(f"{url} answered {response.status_code}")
                    if round_number:
                        sample[name].append(elapsed)
        figures = []
        for (process, _), sample in zip(servers, samples):
            workers = worker_pids(process.pid)
            rss = max(peak_rss_mb(pid) for pid in workers) if workers else float("nan")
            figures.append(ServedFigures({name: statistics.median(times) * 1000 for name, times in sample.items()}, rss))
    return figures


def ingestion_rate(database: str, key: str, workers: int, runs: int, batches: int, first_seed: int,
                   span: int) -> float:
    """Median events/s of `runs` runs of `batches` 1,000-event batches, one client per worker,
    the events spread over the last `span` seconds."""
    with ingest_http.gunicorn(database, workers) as (_, base):
        ingest_http.create_configs(base, key)
        ingest_http.post_all(base, key, ingest_http.batch_bodies(workers, seed=first_seed, span=span))  # warm-up
        rates = [ingest_http.timed_run(base, key, ingest_http.batch_bodies(batches, seed=first_seed + 1 + run, span=span),
                                       workers)
                 for run in range(runs)]
    return statistics.median(rates)
