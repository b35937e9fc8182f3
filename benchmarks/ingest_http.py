"""Ingestion rate over HTTP: 1,000-event batches POSTed to gunicorn (2 workers) on a new database.

The server runs with its own durable defaults (WAL, synchronous=FULL: every batch is on
disk when it is answered). Bodies are encoded before the clock starts, so the figure is
the server's: parse, validate, store with rollups, commit, answer.

    python benchmarks/ingest_http.py [--runs 7] [--batches 10] [--clients 1]

Prints each run's events/s and the median.
"""
import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from usage_server import create_app  # noqa: E402
from usage_server.auth import create_key  # noqa: E402
from usage_server.storage import connect, write_transaction  # noqa: E402

BATCH = 1000
START_SECONDS = 60  # a loaded machine can take a while to boot workers
CONFIGS = {"cfg_chat": ("gpt-4o", "OpenAI"), "cfg_mini": ("gpt-4o-mini", "OpenAI"), "cfg_haiku": ("claude-haiku-4-5", "Anthropic")}
ZONES = (timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)),
         timezone(timedelta(hours=5, minutes=45)), None)  # None: written without an offset (UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn(database: str, workers: int):
    """Yields (master process, base URL) once GET /health answers; always stopped on exit."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("USAGE_SERVER_")}
    env["USAGE_SERVER_DATABASE"] = database
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
         "--chdir", str(REPO), "--log-level", "warning", "wsgi:app"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # the access log, one line a request
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if requests.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still booting
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.1)
        yield process, base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_configs(base: str, key: str) -> None:
    """The configurations the batches use (409: made by an earlier run)."""
    for config_id, (model_id, provider) in CONFIGS.items():
        response = requests.post(f"{base}/v1/model-configs", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                                 json={"id": config_id, "modelId": model_id, "provider": provider})
        if response.status_code not in (201, 409):
            response.raise_for_status()


def batch_bodies(count: int, seed: int, span: int = 30 * 86_400) -> list[bytes]:
    """`count` batches of unique events over the last `span` seconds (30 days: a backfill, every
    event in a rollup slot of its own; 600: live traffic, a few slots per batch), as ready-to-send bytes."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    bodies = []
    for b in range(count):
        events = []
        for n in range(BATCH):
            instant = now - timedelta(seconds=rng.randrange(span))
            zone = ZONES[n % len(ZONES)]
            stamp = instant.astimezone(zone).isoformat() if zone else instant.replace(tzinfo=None).isoformat()
            event = {"id": f"bench-{seed}-{b}-{n}", "timestamp": stamp, "modelConfigId": rng.choice(list(CONFIGS)),
                     "promptTokens": rng.randrange(50, 8000), "completionTokens": rng.randrange(10, 2000),
                     "executionTime": round(rng.uniform(0.2, 20), 3)}
            if n % 4 == 0:
                event["cost"] = round(rng.uniform(0, 0.2), 6)
            if n % 3 == 0:
                event["billingSource"] = "user"
            events.append(event)
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


def post_all(base: str, key: str, bodies: list[bytes]) -> None:
    with requests.Session() as session:
        session.headers.update({"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        for body in bodies:
            response = session.post(f"{base}/v1/model-usage/events", data=body, timeout=60)
            assert response.status_code == 200 and response.json()["accepted"] == BATCH, response.text


def timed_run(base: str, key: str, bodies: list[bytes], clients: int) -> float:
    """Events per second for `bodies`, shared out among `clients` threads; a batch that is
    not stored (a 503, say) fails the run instead of leaving its thread early."""
    shares = [bodies[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        for done in [pool.submit(post_all, base, key, share) for share in shares]:
            done.result()
        return len(bodies) * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batches", type=int, default=10, help="1,000-event batches per run")
    parser.add_argument("--clients", type=int, default=1, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--span", type=int, default=30 * 86_400,
                        help="seconds the events of a run spread over (600: live traffic)")
    parser.add_argument("--dir", default=None, help="where the database goes (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        database = str(Path(folder) / "usage.sqlite")
        conn = connect(create_app({"DATABASE": database}).config)
        with write_transaction(conn):
            key = create_key(conn, "bench", ["read", "write"])[1]
        conn.close()
        with gunicorn(database, args.workers) as (_, base):
            create_configs(base, key)
            post_all(base, key, batch_bodies(2, seed=-1))  # warm-up: imports, caches, first pages
            rates = []
            for run in range(args.runs):
                rate = timed_run(base, key, batch_bodies(args.batches, seed=run, span=args.span), args.clients)
                rates.append(rate)
                print(f"run {run + 1}: {rate:,.0f} events/s")
            health = requests.get(f"{base}/health", timeout=10).json()
    print(f"median of {args.runs} runs: {statistics.median(rates):,.0f} events/s "
          f"({args.batches} x {BATCH}-event batches per run over {args.span:,} s, {args.clients} client(s), {args.workers} workers, "
          f"synchronous={health['pragmas']['synchronous']}, journal_mode={health['pragmas']['journal_mode']})")


if __name__ == "__main__":
    main()
