"""Benchmark usage_server at 1M and 10M events, against the raw-event baseline, in one run.

    python -m benchmarks                 # 1M and 10M events (about 25 minutes, 5 GB of disk)
    python -m benchmarks --size 1M       # one size
    python -m benchmarks --smoke         # everything at a tiny size, in seconds
    python -m benchmarks --zones         # time zones beside UTC, without and with FAST_TIMEZONES (1M)

Databases go to a temporary folder under --workdir (default: the system's) and are
deleted at the end.
"""
import argparse
import platform
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

from . import dataset, latency, server, zones

TARGET_SPEEDUP = 100  # times faster than the baseline
TARGET_GROWTH = 1.5  # latency at the largest size over the smallest
TARGET_TRIVIAL = {"last_7_days/hour": 2, "last_30_days/day": 2, "current_year/week": 2, "365 days/day": 5}
TARGET_INGEST = 25_000  # events/s
TARGET_SEED_SECONDS = 30  # for one million events
TARGET_RSS_MB = 150
INGEST_OWNER = "ingest-bench"
LARGEST = "largest: 10,000 day buckets"


@dataclass
class SizeResult:
    data: dataset.Dataset
    timings: list
    served: server.ServedFigures
    ingest: dict  # workers -> events/s


def parse_size(text: str) -> int:
    text = text.strip().upper().replace("_", "").replace(",", "")
    factor = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * factor)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(events: int, workdir: Path, args) -> SizeResult:
    """Seed a database, then what needs a server: ingestion, HTTP latency, peak memory."""
    say(f"[{events:,}] seeding ...")
    data = dataset.build(workdir, events, days=args.days)
    write_key = latency.new_key(data.path, INGEST_OWNER, ("read", "write"))
    ingest = {}
    for workers in (2, 4):
        say(f"[{events:,}] ingesting over HTTP with {workers} workers ...")
        ingest[workers] = server.ingestion_rate(data.path, write_key, workers, args.ingest_runs, args.ingest_batches,
                                                first_seed=workers * 1000)
    today = datetime.now(timezone.utc).date()
    urls = latency.case_urls(today)
    urls[LARGEST] = "/v1/model-usage?" + urlencode(
        {"startDate": (today - timedelta(days=9_999)).isoformat(), "endDate": today.isoformat()})
    say(f"[{events:,}] over HTTP, and a worker's peak memory ...")
    served = server.served(data.path, latency.new_key(data.path, data.heaviest), urls, args.http_rounds)
    return SizeResult(data, [], served, ingest)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    import os

    return (f"{cpu}, {os.cpu_count()} cores, {memory / 1024:.0f} GiB RAM; Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}")


def times(value: float) -> str:
    return f"{value:,.0f}×" if value >= 10 else f"{value:.1f}×"


def table(result: SizeResult) -> list[str]:
    data, trivial = result.data, result.timings[0]
    lines = [
        f"## {data.events:,} events ({dataset.OWNERS} owners, {dataset.DAYS} days; heaviest owner "
        f"{data.heaviest_events:,} events)",
        "",
        "| query (heaviest owner) | median ms | p95 ms | × trivial | baseline ms | speed-up | same answer | HTTP ms |",
        "|---|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for timing in result.timings:
        http = result.served.http_median_ms.get(timing.name, float("nan"))
        if timing.baseline_ms is None:
            lines.append(f"| {timing.name} | {timing.median_ms:.2f} | {timing.p95_ms:.2f} | 1.0× | | | | {http:.2f} |")
            continue
        lines.append(
            f"| {timing.name} | {timing.median_ms:.2f} | {timing.p95_ms:.2f} | {times(timing.median_ms / trivial.median_ms)} "
            f"| {timing.baseline_ms:,.1f} | {times(timing.baseline_ms / timing.median_ms)} "
            f"| {'yes' if timing.same_answer else 'NO'} | {http:.2f} |")
    lines += [
        f"| {LARGEST} (HTTP only) | | | | | | | {result.served.http_median_ms[LARGEST]:.2f} |",
        "",
        f"- seeding: {data.events:,} events in {data.seconds:.1f} s = {data.events / data.seconds:,.0f} events/s",
        "- ingestion over HTTP, 1,000-event batches, synchronous=FULL, rollups included: "
        + ", ".join(f"{workers} workers {rate:,.0f} events/s" for workers, rate in result.ingest.items()),
        f"- a worker's peak RSS (VmHWM) after every query above and the largest range: "
        f"{result.served.peak_rss_mb:.0f} MB",
    ]
    return lines


def growth_table(first: SizeResult, last: SizeResult) -> list[str]:
    lines = [f"## Latency growth from {first.data.events:,} to {last.data.events:,} events", "",
             "| query | median ratio |", "|---|---:|"]
    for small, large in zip(first.timings, last.timings):
        lines.append(f"| {small.name} | {large.median_ms / small.median_ms:.2f}× |")
    return lines


def targets(results: list[SizeResult]) -> list[str]:
    """Each target of the issue with the figure that decides it (the largest size decides)."""
    last = results[-1]
    trivial = last.timings[0].median_ms
    checks = []
    speedups = [timing.baseline_ms / timing.median_ms for timing in last.timings[1:]]
    checks.append((f"every query ≥ {TARGET_SPEEDUP}× faster than the baseline", f"lowest {min(speedups):,.0f}×",
                   min(speedups) >= TARGET_SPEEDUP))
    if len(results) > 1:
        growth = [large.median_ms / small.median_ms for small, large in zip(results[0].timings, last.timings)][1:]
        checks.append((f"latency within {TARGET_GROWTH}× from the smallest to the largest size",
                       f"highest {max(growth):.2f}×", max(growth) <= TARGET_GROWTH))
    http = last.served.http_median_ms
    for timing in last.timings[1:]:
        limit = TARGET_TRIVIAL.get(timing.name.removesuffix(" +config"))
        ratio, over_http = timing.median_ms / trivial, http[timing.name] / http[latency.TRIVIAL]
        checks.append((f"{timing.name} ≤ {limit}× trivial (WSGI / HTTP)", f"{ratio:.1f}× / {over_http:.1f}×",
                       f"{'yes' if ratio <= limit else 'no'} / {'yes' if over_http <= limit else 'no'}"))
    rate = min(min(result.ingest.values()) for result in results)
    checks.append((f"ingestion ≥ {TARGET_INGEST:,} events/s", f"lowest {rate:,.0f} events/s", rate >= TARGET_INGEST))
    seed_seconds = max(result.data.seconds / result.data.events * 1_000_000 for result in results)
    checks.append((f"seeding 1M events < {TARGET_SEED_SECONDS} s", f"{seed_seconds:.1f} s per million",
                   seed_seconds < TARGET_SEED_SECONDS))
    rss = max(result.served.peak_rss_mb for result in results)
    checks.append((f"worker peak RSS < {TARGET_RSS_MB} MB", f"{rss:.0f} MB", rss < TARGET_RSS_MB))
    return ["## Targets", "", "| target | measured | met |", "|---|---:|:---:|"] + [
        f"| {name} | {figure} | {met if isinstance(met, str) else 'yes' if met else 'no'} |" for name, figure, met in checks]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", type=parse_size, help="events to seed, e.g. 1M (repeatable; default 1M and 10M)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run of everything, to check that it works")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary databases go")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--days", type=int, default=dataset.DAYS)
    parser.add_argument("--rounds", type=int, default=40, help="timed calls of each query")
    parser.add_argument("--baseline-rounds", type=int, default=3, help="timed runs of each baseline query")
    parser.add_argument("--http-rounds", type=int, default=15, help="timed calls of each query over HTTP")
    parser.add_argument("--ingest-runs", type=int, default=5, help="timed ingestion runs per worker count")
    parser.add_argument("--ingest-batches", type=int, default=20, help="1,000-event batches per ingestion run")
    parser.add_argument("--zones", action="store_true", help="only zone-aware queries beside UTC (first size only)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size = args.size or [3_000]
        args.rounds, args.baseline_rounds, args.http_rounds = 3, 1, 1
        args.ingest_runs, args.ingest_batches = 1, 2
    sizes = sorted(args.size or [1_000_000, 10_000_000])
    if args.zones:
        return zones_only(sizes[0], args)

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="usage-bench-", dir=args.workdir) as folder:
        workdir = Path(folder)
        if args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="usage-bench-kept-", dir=args.workdir))
        results = [prepare(events, workdir, args) for events in sizes]
        say("timing queries at every size together, then the raw-event baseline ...")
        today = datetime.now(timezone.utc).date()
        timings = latency.measure([(result.data.path, result.data.heaviest) for result in results], today,
                                  args.rounds, args.baseline_rounds)
        for result, timing in zip(results, timings):
            result.timings = timing
            if not args.keep:
                dataset.remove_database(result.data.path)

    lines = [f"# usage_server benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", machine(), ""]
    for result in results:
        lines += table(result) + [""]
    if len(results) > 1:
        lines += growth_table(results[0], results[-1]) + [""]
    lines += targets(results)
    print("\n".join(lines))
    return 0


def zones_only(events: int, args) -> int:
    with tempfile.TemporaryDirectory(prefix="usage-bench-", dir=args.workdir) as folder:
        say(f"[{events:,}] seeding ...")
        data = dataset.build(Path(folder), events, days=args.days)
        say(f"[{events:,}] timing zones beside UTC, without and with FAST_TIMEZONES ...")
        lines = zones.run(data.path, data, args)
        dataset.remove_database(data.path)
    header = [f"# usage_server time-zone benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", machine(), ""]
    print("\n".join(header + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
