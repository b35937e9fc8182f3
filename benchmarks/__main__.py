"""Benchmark usage_server at 1M and 10M events, against the raw-event baseline, in one run.

    python -m benchmarks                     # SQLite at 1M and 10M events (about 25 minutes, 5 GB of disk)
    python -m benchmarks --engine both       # SQLite and PostgreSQL side by side (about an hour)
    python -m benchmarks --engine postgresql --sizes 1M   # one engine, one size
    python -m benchmarks --smoke             # everything at a tiny size, in seconds
    python -m benchmarks --zones             # time zones beside UTC, without and with FAST_TIMEZONES (1M)

SQLite databases go to a temporary folder under --workdir (default: the system's);
PostgreSQL ones to a throwaway cluster (benchmarks/engines.py) or to the server named by
USAGE_SERVER_BENCH_POSTGRES. All are deleted at the end.
"""
import argparse
import platform
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

from . import dataset, engines, latency, server, zones

TARGET_SPEEDUP = 100  # times faster than the baseline
TARGET_GROWTH = 1.5  # latency at the largest size over the smallest
TARGET_TRIVIAL = 2  # a usage query's time over the trivial request's, through the WSGI app
TARGET_TRIVIAL_HTTP = {"365 days/day": 2}  # the same over HTTP; 1.5 for every other query
TARGET_TRIVIAL_HTTP_DEFAULT = 1.5
TARGET_INGEST = 40_000  # events/s over HTTP, 2 workers, 1,000-event batches, durable, in each shape below
INGEST_WORKERS = 2
LIVE, BACKFILL = "live traffic (the last 10 minutes)", "backfill (the last year)"
INGEST_SHAPES = {LIVE: 600, BACKFILL: 365 * 86_400}  # the seconds a run's events spread over
TARGET_SEED_SECONDS = 15  # for one million events
TARGET_RSS_MB = 150
TARGET_ENGINE_RATIO = 2  # PostgreSQL's time over SQLite's, over HTTP
INGEST_OWNER = "ingest-bench"
LARGEST = "largest: 10,000 day buckets"


@dataclass
class SizeResult:
    engine: str  # "sqlite" or "postgresql"
    data: dataset.Dataset
    settle_seconds: float | None  # VACUUM ANALYZE after seeding, where the engine wants one
    ingest: dict  # shape (INGEST_SHAPES) -> events/s
    timings: list = field(default_factory=list)
    served: server.ServedFigures | None = None

    @property
    def label(self) -> str:
        return engines.LABELS[self.engine]


def parse_size(text: str) -> int:
    text = text.strip().upper().replace("_", "").replace(",", "")
    factor = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * factor)


def parse_sizes(text: str) -> list[int]:
    """"1M" or "1M,10M" (a size's own digit groups may not use commas here)."""
    return [parse_size(part) for part in text.split(",") if part.strip()]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(events: int, engine, args) -> SizeResult:
    """Seed a database, then ingestion over HTTP into it."""
    tag = f"[{events:,} {engines.LABELS[engine.name]}]"
    say(f"{tag} seeding ...")
    data = dataset.build(engine.new_database(events), events, days=args.days)
    settle_seconds = engine.settle(data.database)
    write_key = latency.new_key(data.database, INGEST_OWNER, ("read", "write"))
    ingest = {}
    for number, (shape, span) in enumerate(INGEST_SHAPES.items(), start=1):
        say(f"{tag} ingesting over HTTP with {INGEST_WORKERS} workers, {shape} ...")
        ingest[shape] = server.ingestion_rate(data.database, write_key, INGEST_WORKERS, args.ingest_runs,
                                              args.ingest_batches, first_seed=number * 1000, span=span)
    return SizeResult(engine.name, data, settle_seconds, ingest)


def http_urls() -> dict[str, str]:
    today = datetime.now(timezone.utc).date()
    urls = latency.case_urls(today)
    urls[LARGEST] = "/v1/model-usage?" + urlencode(
        {"startDate": (today - timedelta(days=9_999)).isoformat(), "endDate": today.isoformat()})
    return urls


def machine(engine_descriptions: list[str]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    import os

    return (f"{cpu}, {os.cpu_count()} cores, {memory / 1024:.0f} GiB RAM; Python {platform.python_version()}; "
            + "; ".join(engine_descriptions))


def times(value: float) -> str:
    return f"{value:,.0f}×" if value >= 10 else f"{value:.1f}×"


def table(result: SizeResult, durability: str) -> list[str]:
    data, trivial = result.data, result.timings[0]
    lines = [
        f"## {data.events:,} events on {result.label} ({dataset.OWNERS} owners, {dataset.DAYS} days; heaviest owner "
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
    settled = "" if result.settle_seconds is None else f", then VACUUM (ANALYZE) in {result.settle_seconds:.1f} s"
    lines += [
        f"| {LARGEST} (HTTP only) | | | | | | | {result.served.http_median_ms[LARGEST]:.2f} |",
        "",
        f"- seeding: {data.events:,} events in {data.seconds:.1f} s = {data.events / data.seconds:,.0f} events/s{settled}",
        f"- ingestion over HTTP, {INGEST_WORKERS} workers, 1,000-event batches, {durability}, rollups included: "
        + ", ".join(f"{shape} {rate:,.0f} events/s" for shape, rate in result.ingest.items()),
        f"- a worker's peak RSS (VmHWM) after every query above and the largest range: "
        f"{result.served.peak_rss_mb:.0f} MB",
    ]
    return lines


def by_engine(results: list[SizeResult]) -> dict[str, list[SizeResult]]:
    """Each engine's results, smallest size first."""
    grouped = {}
    for result in results:
        grouped.setdefault(result.engine, []).append(result)
    return grouped


def growth_table(grouped: dict[str, list[SizeResult]]) -> list[str]:
    """Median at the largest size over the median at the smallest, per query and engine."""
    first, last = next(iter(grouped.values()))[0], next(iter(grouped.values()))[-1]
    labels = [engines.LABELS[engine] for engine in grouped]
    lines = [f"## Latency growth from {first.data.events:,} to {last.data.events:,} events", "",
             "| query | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for index, timing in enumerate(first.timings):
        ratios = [f"{own[-1].timings[index].median_ms / own[0].timings[index].median_ms:.2f}×" for own in grouped.values()]
        lines.append(f"| {timing.name} | " + " | ".join(ratios) + " |")
    return lines


def engine_ratios(sqlite: SizeResult, postgresql: SizeResult) -> dict[str, tuple[float, float | None]]:
    """Per query: PostgreSQL's median over SQLite's, over HTTP and through the WSGI app (None: HTTP only)."""
    wsgi = {mine.name: theirs.median_ms / mine.median_ms for mine, theirs in zip(sqlite.timings, postgresql.timings)}
    return {name: (postgresql.served.http_median_ms[name] / ms, wsgi.get(name))
            for name, ms in sqlite.served.http_median_ms.items()}


def side_by_side(grouped: dict[str, list[SizeResult]]) -> list[str]:
    """PostgreSQL beside SQLite at each size: every query over HTTP, ingestion and seeding."""
    lines = []
    for sqlite, postgresql in zip(grouped["sqlite"], grouped["postgresql"]):
        ratios = engine_ratios(sqlite, postgresql)
        lines += [f"## PostgreSQL beside SQLite at {sqlite.data.events:,} events", "",
                  "| query (heaviest owner) | SQLite HTTP ms | PostgreSQL HTTP ms | PostgreSQL ÷ SQLite, HTTP | ÷, WSGI |",
                  "|---|---:|---:|---:|---:|"]
        for name, (http, wsgi) in ratios.items():
            lines.append(f"| {name} | {sqlite.served.http_median_ms[name]:.2f} | "
                         f"{postgresql.served.http_median_ms[name]:.2f} | {http:.2f}× | "
                         + ("" if wsgi is None else f"{wsgi:.2f}×") + " |")
        lines += ["", f"- ingestion over HTTP, {INGEST_WORKERS} workers, 1,000-event batches (PostgreSQL ÷ SQLite): "
                  + ", ".join(f"{shape} {postgresql.ingest[shape]:,.0f} ÷ {rate:,.0f} events/s = "
                              f"{postgresql.ingest[shape] / rate:.2f}×" for shape, rate in sqlite.ingest.items()),
            f"- seeding: {postgresql.data.seconds:.1f} s ÷ {sqlite.data.seconds:.1f} s = "
            f"{postgresql.data.seconds / sqlite.data.seconds:.2f}× the time", ""]
    return lines


@dataclass(frozen=True)
class Check:
    """One target: met when `measured` is at least (or at most) `limit`; `why` says why it
    can be missed, from the profiles in docs/performance.md, and is printed when it is."""

    target: str
    figure: str  # what was measured, as printed
    measured: float
    limit: float
    at_least: bool
    why: str

    @property
    def met(self) -> bool:
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit

    @property
    def missed_by(self) -> str:
        """How far from the target: the factor the measured figure has to improve by."""
        if self.met:
            return ""
        factor = (self.limit / self.measured if self.measured else float("inf")) if self.at_least \
            else self.measured / self.limit
        gap = abs(self.measured - self.limit) / self.limit
        digits = ".1%" if gap < 0.1 else ".0%"  # 2.5% over, 58% short
        return f"{factor:.2f}× ({gap:{digits}} {'short' if self.at_least else 'over'})"


WHY = {  # the reasons a target is missed, as the profiles in docs/performance.md show them
    "speedup": "queries for one configuration read its series' rollup rows (the owner rollups serve the others)",
    "growth": "more rollup rows per series at the larger size, and a colder page cache",
    "engine": "every statement is a round trip to the PostgreSQL server, in a REPEATABLE READ transaction",
    "trivial": "Python per bucket (a dict per point, 365 of them by day) and the per-model totals, where the "
               "trivial request reads one short list",
    "ingest": {  # per shape of INGEST_SHAPES
        LIVE: "a batch holds the write lock for its inserts into three B-trees, a few rollup upserts and an "
              "fsync'd commit (about 12 ms per 1,000 events); parsing and validation add 5 to 10 ms, on two cores "
              "shared with the client",
        BACKFILL: "nearly every event of a backfill has rollup slots of its own: a batch upserts thousands of "
                  "rollup rows beside its 1,000 events under the write lock (30 ms and more per batch)",
    },
    "seed": "about 8 µs an event to generate and 19 µs to store (SQLite's insert into three B-trees 8 µs, "
            "then the fingerprint, the price and the rollup sums)",
    "rss": "the genai-prices catalogue and the libraries loaded in each worker",
}
WHY_POSTGRESQL = {  # where PostgreSQL's reasons differ
    "speedup": "PostgreSQL scans a week or one configuration's raw events in well under a second, and every "
               "answer pays its round trips to the server (a trivial request is half of it): the baseline bounds "
               "the ratio",
    "trivial": "a usage answer makes more round trips to the server than the trivial request (offsets and "
               "version, series, totals, buckets), then Python per bucket",
    "ingest": {
        LIVE: "a batch is copied into usage_event and staged for its rollup upserts under one advisory lock, "
              "with its commit's WAL flush; the server, two workers and the client share two cores",
        BACKFILL: "as for live traffic, with thousands of rollup rows staged and upserted per batch",
    },
    "seed": "about 8 µs an event to generate, then each 10,000-event step copied to the server with its "
            "rollup upserts and committed",
}


def targets(results: list[SizeResult], sqlite: list[SizeResult] | None = None) -> list[str]:
    """Each target with the figure that decides it (the largest size decides), for one engine,
    and for each one missed by how much and why; `sqlite`, given for PostgreSQL's results,
    adds the target of PostgreSQL beside SQLite."""
    last = results[-1]
    trivial = last.timings[0].median_ms
    why = {**WHY, **(WHY_POSTGRESQL if last.engine == "postgresql" else {})}
    checks = []
    speedups = [timing.baseline_ms / timing.median_ms for timing in last.timings[1:]]
    slowest = min(zip(speedups, last.timings[1:]), key=lambda pair: pair[0])
    checks.append(Check(f"every query ≥ {TARGET_SPEEDUP}× faster than the baseline",
                        f"lowest {slowest[0]:,.0f}× ({slowest[1].name})", slowest[0], TARGET_SPEEDUP, True, why["speedup"]))
    hourly = next(timing for timing in last.timings if timing.name == "last_7_days/hour")
    speedup = hourly.baseline_ms / hourly.median_ms
    checks.append(Check(f"last_7_days/hour ≥ {TARGET_SPEEDUP}× faster than the baseline", f"{speedup:,.0f}×", speedup,
                        TARGET_SPEEDUP, True, why["speedup"]))
    if len(results) > 1:
        growth = max(large.median_ms / small.median_ms for small, large in zip(results[0].timings[1:], last.timings[1:]))
        checks.append(Check(f"latency within {TARGET_GROWTH}× from the smallest to the largest size",
                            f"highest {growth:.2f}×", growth, TARGET_GROWTH, False, why["growth"]))
    if sqlite:
        worst, name = max((http, name) for name, (http, _) in engine_ratios(sqlite[-1], last).items()
                          if name != latency.TRIVIAL)
        checks.append(Check(f"every usage query within {TARGET_ENGINE_RATIO}× of SQLite's time over HTTP",
                            f"highest {worst:.2f}× ({name})", worst, TARGET_ENGINE_RATIO, False, why["engine"]))
    http = last.served.http_median_ms
    for timing in last.timings[1:]:
        limit = TARGET_TRIVIAL_HTTP.get(timing.name.removesuffix(" +config"), TARGET_TRIVIAL_HTTP_DEFAULT)
        ratio, over_http = timing.median_ms / trivial, http[timing.name] / http[latency.TRIVIAL]
        checks.append(Check(f"{timing.name} ≤ {TARGET_TRIVIAL}× trivial, in process", f"{ratio:.2f}×", ratio,
                            TARGET_TRIVIAL, False, why["trivial"]))
        checks.append(Check(f"{timing.name} ≤ {limit}× trivial, over HTTP", f"{over_http:.2f}×", over_http, limit, False,
                            why["trivial"]))
    for shape in INGEST_SHAPES:
        rate = min(result.ingest[shape] for result in results)
        checks.append(Check(f"ingestion ≥ {TARGET_INGEST:,} events/s, {INGEST_WORKERS} workers, {shape}",
                            f"lowest {rate:,.0f} events/s", rate, TARGET_INGEST, True, why["ingest"][shape]))
    seed_seconds = max(result.data.seconds / result.data.events * 1_000_000 for result in results)
    checks.append(Check(f"seeding 1M events ≤ {TARGET_SEED_SECONDS} s", f"{seed_seconds:.1f} s per million",
                        seed_seconds, TARGET_SEED_SECONDS, False, why["seed"]))
    rss = max(result.served.peak_rss_mb for result in results)
    checks.append(Check(f"worker peak RSS < {TARGET_RSS_MB} MB", f"{rss:.0f} MB", rss, TARGET_RSS_MB, False, why["rss"]))
    return [f"## Targets, {last.label}", "", "| target | measured | met | missed by | why |", "|---|---:|:---:|---:|---|"] + [
        f"| {check.target} | {check.figure} | {'yes' if check.met else 'no'} | {check.missed_by} | "
        f"{'' if check.met else check.why} |" for check in checks] + [
        "", "The reasons come from the profiles in docs/performance.md."]


def report(results: list[SizeResult], opened: dict) -> str:
    grouped = by_engine(results)
    descriptions = [opened[engine].describe() for engine in grouped]
    lines = [f"# usage_server benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", machine(descriptions), ""]
    for result in results:
        lines += table(result, opened[result.engine].durability) + [""]
    if len(grouped) > 1:
        lines += side_by_side(grouped)
    if len(next(iter(grouped.values()))) > 1:
        lines += growth_table(grouped) + [""]
    for engine, own in grouped.items():
        lines += targets(own, grouped.get("sqlite") if engine == "postgresql" else None) + [""]
    return "\n".join(lines).rstrip()


def run(sizes: list[int], names: list[str], workdir: Path, args) -> str:
    """Every size on every engine; then over HTTP and through the WSGI app, every database in
    the same rounds; then the baseline. Databases are removed unless --keep."""
    opened = {}
    try:
        for name in names:
            opened[name] = engines.open_engine(name, workdir)
        results = [prepare(events, opened[name], args) for events in sizes for name in names]
        say("over HTTP, every database in the same rounds, and each worker's peak memory ...")
        keys = [latency.new_key(result.data.database, result.data.heaviest) for result in results]
        figures = server.served([(result.data.database, key) for result, key in zip(results, keys)], http_urls(),
                                args.http_rounds)
        say("timing queries in every database together, then the raw-event baseline ...")
        today = datetime.now(timezone.utc).date()
        timings = latency.measure([(result.data.database, result.data.heaviest) for result in results], today,
                                  args.rounds, args.baseline_rounds)
        for result, served, timing in zip(results, figures, timings):
            result.served, result.timings = served, timing
        text = report(results, opened)
        if not args.keep:
            for result in results:
                opened[result.engine].remove(result.data.database)
    finally:
        for engine in opened.values():
            engine.close()
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="sqlite",
                        help="the database engine to benchmark, or both side by side (default: sqlite)")
    parser.add_argument("--size", "--sizes", dest="size", action="extend", type=parse_sizes,
                        help="events to seed, e.g. 1M or 1M,10M (repeatable; default 1M and 10M)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run of everything, to check that it works")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary SQLite databases go")
    parser.add_argument("--keep", action="store_true",
                        help="keep the databases (SQLite files; PostgreSQL ones only on a server of USAGE_SERVER_BENCH_POSTGRES)")
    parser.add_argument("--days", type=int, default=dataset.DAYS)
    parser.add_argument("--rounds", type=int, default=40, help="timed calls of each query")
    parser.add_argument("--baseline-rounds", type=int, default=3, help="timed runs of each baseline query")
    parser.add_argument("--http-rounds", type=int, default=15, help="timed calls of each query over HTTP")
    parser.add_argument("--ingest-runs", type=int, default=5, help="timed ingestion runs per worker count")
    parser.add_argument("--ingest-batches", type=int, default=20, help="1,000-event batches per ingestion run")
    parser.add_argument("--zones", action="store_true", help="only zone-aware queries beside UTC (first size only, SQLite)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size = args.size or [3_000]
        args.rounds, args.baseline_rounds, args.http_rounds = 3, 1, 1
        args.ingest_runs, args.ingest_batches = 1, 2
    sizes = sorted(set(args.size or [1_000_000, 10_000_000]))
    if args.zones:
        return zones_only(sizes[0], args)

    names = list(engines.NAMES) if args.engine == "both" else [args.engine]
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="usage-bench-", dir=args.workdir) as folder:
        workdir = Path(folder)
        if args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="usage-bench-kept-", dir=args.workdir))
        print(run(sizes, names, workdir, args))
    return 0


def zones_only(events: int, args) -> int:
    with tempfile.TemporaryDirectory(prefix="usage-bench-", dir=args.workdir) as folder:
        say(f"[{events:,}] seeding ...")
        engine = engines.SQLite(Path(folder))
        data = dataset.build(engine.new_database(events), events, days=args.days)
        say(f"[{events:,}] timing zones beside UTC, without and with FAST_TIMEZONES ...")
        lines = zones.run(data.database, data, args)
        engine.remove(data.database)
    header = [f"# usage_server time-zone benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "",
              machine([engine.describe()]), ""]
    print("\n".join(header + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
