"""The standard sqlite3 module beside apsw (whose wheels bundle a current SQLite, free of the
WAL-reset bug of 3.7.0 to 3.51.2), on the server's statements, in the same interleaved rounds.

    python -m benchmarks.sqlite_drivers [--rounds 5] [--batches 300] [--rollup-rows 50000] [--smoke]

Each driver gets a database of its own, made from schema.sql with the server's pragmas
(WAL, synchronous = FULL, automatic checkpoints off). Each round runs the same work on one
driver then the other (the first driver alternates between rounds), so a busy moment of the
shared machine falls on both:

- write: the server's write path shape, BEGIN IMMEDIATE, 1,000 events into usage_event and
  30 upserts into rollup_hour (the server's own INSERT statements), COMMIT; after a commit
  that brings the changes since the last checkpoint to 2,000, PRAGMA wal_checkpoint(PASSIVE)
  under the checkpoint lock file, as the server does. Reported as batches/s (of the median).
- read: a year of one owner's days summed from rollup_day (GROUP BY over --rollup-rows rows).
- point: one rollup_day row by its primary key, timed in blocks of calls (per-call overhead).

Prints Markdown on stdout (progress on stderr): the medians per round and over all rounds
with the ratio apsw ÷ sqlite3, then each driver's versions and what its database holds.
"""
import argparse
import fcntl
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import apsw

from usage_server import queries
from usage_server.storage.sqlite import CHECKPOINT_CHANGES, JOURNAL_SIZE_LIMIT

SCHEMA = Path(__file__).resolve().parent.parent / "schema.sql"
EVENTS = 1_000  # per write batch, the server's largest batch
UPSERTS = 30  # rollup rows per batch: 6 series x 5 hours
SERIES = 6
DAY = 86_400
YEAR_START = 1_735_689_600  # 2025-01-01 UTC
PRAGMAS = ("PRAGMA busy_timeout = 60000", "PRAGMA journal_mode = WAL", "PRAGMA wal_autocheckpoint = 0",
           f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}", "PRAGMA synchronous = FULL", "PRAGMA foreign_keys = ON")
READ = """
SELECT slot_start, SUM(requests), SUM(platform_cost + user_cost), SUM(platform_tokens + user_tokens)
FROM rollup_day
WHERE owner_id = ?
  AND slot_start >= ?
  AND slot_start < ?
GROUP BY slot_start
ORDER BY slot_start
"""
POINT = """
SELECT requests, platform_cost, user_cost
FROM rollup_day
WHERE owner_id = ?
  AND slot_start = ?
  AND series_id = ?
"""
CONTENTS = """
SELECT (SELECT COUNT(*) FROM usage_event), (SELECT SUM(ts_us / 1000000 + cost_micros + total_tokens + fingerprint) FROM usage_event),
       (SELECT COUNT(*) FROM rollup_hour), (SELECT SUM(requests + platform_cost + platform_tokens) FROM rollup_hour)
"""


@dataclass(frozen=True)
class Driver:
    """What differs between the drivers: opening a connection, running a script, versions."""
    name: str
    open: Callable
    run_script: Callable
    version: str
    sqlite_version: str


DRIVERS = (
    Driver("sqlite3", lambda path: sqlite3.connect(path, isolation_level=None),  # no implicit BEGIN, as apsw
           lambda conn, script: conn.executescript(script), f"Python {platform.python_version()}",
           sqlite3.sqlite_version),
    Driver("apsw", apsw.Connection, lambda conn, script: conn.execute(script), apsw.apswversion(),
           apsw.sqlite_lib_version()),
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """One driver's connection to its own database, and the work each round times."""

    def __init__(self, driver: Driver, folder: str, rollup_rows: list[tuple]):
        self.driver = driver
        path = os.path.join(folder, f"{driver.name}.sqlite")
        self.conn = driver.open(path)
        for pragma in PRAGMAS:
            self.conn.execute(pragma).fetchall()
        driver.run_script(self.conn, SCHEMA.read_text())
        self.lock = os.open(f"{path}-checkpoint", os.O_RDWR | os.O_CREAT, 0o600)
        self.batches = self.changes = self.changes_at_checkpoint = 0
        self.write([("INSERT INTO owner (id, name, created_at) VALUES (1, 'bench', '2025-01-01T00:00:00Z')", [()]),
                    ("INSERT INTO usage_series (id, owner_id, config_id, model_id, provider, model_name) "
                     "VALUES (?, 1, ?, 'gpt-4o', 'OpenAI', 'GPT-4o')",
                     [(series, f"cfg{series}") for series in range(1, SERIES + 1)]),
                    (queries.UPSERT_ROLLUP[DAY], rollup_rows)])

    def write(self, statements: list[tuple[str, list]]) -> None:
        """One transaction as the server's write_transaction runs it, then its checkpoint rule."""
        self.conn.execute("BEGIN IMMEDIATE")
        for sql, rows in statements:
            self.conn.executemany(sql, rows)
        self.conn.execute("COMMIT")
        self.changes += sum(len(rows) for _, rows in statements)
        if self.changes - self.changes_at_checkpoint >= CHECKPOINT_CHANGES:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                fcntl.flock(self.lock, fcntl.LOCK_UN)
            self.changes_at_checkpoint = self.changes

    def write_batches(self, count: int) -> list[float]:
        timings = []
        for _ in range(count):
            statements = [(queries.INSERT_EVENT, event_rows(self.batches)),
                          (queries.UPSERT_ROLLUP[3_600], hour_rows(self.batches))]  # built before the clock starts
            started = time.perf_counter()
            self.write(statements)
            timings.append(time.perf_counter() - started)
            self.batches += 1
        return timings

    def reads(self, count: int) -> tuple[list[float], list]:
        timings = []
        for _ in range(count):
            started = time.perf_counter()
            answer = self.conn.execute(READ, (1, YEAR_START, YEAR_START + 365 * DAY)).fetchall()
            timings.append(time.perf_counter() - started)
        return timings, [tuple(row) for row in answer]

    def points(self, blocks: int, calls: int, keys: list[tuple]) -> list[float]:
        """Seconds per call, of each block of `calls` lookups."""
        timings = []
        execute = self.conn.execute
        for block in range(blocks):
            chosen = keys[block * calls % len(keys):][:calls]
            started = time.perf_counter()
            for key in chosen:
                execute(POINT, key).fetchone()
            timings.append((time.perf_counter() - started) / len(chosen))
        return timings

    def contents(self) -> tuple:
        return tuple(self.conn.execute(CONTENTS).fetchone())

    def close(self) -> None:
        os.close(self.lock)
        self.conn.close()


def event_rows(batch: int) -> list[tuple]:
    """The batch's events, the same for both drivers: live traffic, ten minutes per batch."""
    rows = []
    for index in range(EVENTS):
        prompt, completion = 100 + index % 900, 20 + index % 300
        fingerprint = (batch * EVENTS + index) * 2_654_435_761 % 2**31
        rows.append((1, f"b{batch}-{index}", (YEAR_START + batch * 600) * 1_000_000 + index * 600_000,
                     1 + index % SERIES, prompt, completion, prompt + completion, prompt * 3 + completion * 12, 1,
                     1_000 + index, "platform", fingerprint, 3, index % 50, 0, index % 7))
    return rows


def hour_rows(batch: int) -> list[tuple]:
    """The batch's rollup rows: 5 hours from the batch's on, so consecutive batches mostly update."""
    rows = []
    for index in range(UPSERTS):
        requests, tokens = 30 + index, 1_000 * (index + 1)
        rows.append((1, YEAR_START + (batch + index // SERIES) * 3_600, 1 + index % SERIES, requests, 0,
                     tokens, 0, tokens * 5, 0, tokens // 2, tokens // 10, 0))
    return rows


def rollup_day_rows(count: int, seed: int = 7) -> list[tuple]:
    """A year of days for owner 1 with count // 365 series each (at least one)."""
    rng = random.Random(seed)
    return [(1, YEAR_START + day * DAY, series, rng.randint(1, 500), 0, rng.randint(1, 10**6), 0,
             rng.randint(1, 10**7), 0, rng.randint(1, 10**5), 0, 0)
            for day in range(365) for series in range(1, max(1, count // 365) + 1)]


def figure(value: float) -> str:
    """Three significant digits at least, so a tiny smoke run on a fast machine shows no 0.00."""
    return f"{value:,.1f}" if value >= 100 else f"{value:#.3g}"


def table_row(label: str, figures: dict) -> str:
    """figures: driver name -> (write seconds, read seconds, point seconds) samples."""
    write = {name: 1 / statistics.median(samples[0]) for name, samples in figures.items()}
    read = {name: statistics.median(samples[1]) * 1_000 for name, samples in figures.items()}
    point = {name: statistics.median(samples[2]) * 1_000_000 for name, samples in figures.items()}
    cells = [label]
    for values in (write, read, point):
        cells += [figure(values["sqlite3"]), figure(values["apsw"]), f"{values['apsw'] / values['sqlite3']:.2f}×"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sqlite_drivers", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=300, help="write batches per driver and round")
    parser.add_argument("--reads", type=int, default=100, help="GROUP BY reads per driver and round")
    parser.add_argument("--blocks", type=int, default=200, help="blocks of point queries per driver and round")
    parser.add_argument("--calls", type=int, default=1_000, help="point queries per block")
    parser.add_argument("--rollup-rows", type=int, default=50_000, help="rows of rollup_day the read sums")
    parser.add_argument("--dir", default=None, help="where the databases go (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run, to check that it works")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.batches, args.reads, args.blocks, args.calls, args.rollup_rows = 2, 3, 3, 3, 50, 730
    load_before = os.getloadavg()
    rollup = rollup_day_rows(args.rollup_rows)
    keys = [row[:3] for row in random.Random(11).sample(rollup, min(len(rollup), args.blocks * args.calls))]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="usage-drivers-") as folder:
        say(f"seeding {len(rollup):,} rollup_day rows per driver ...")
        benches = {driver.name: Bench(driver, folder, rollup) for driver in DRIVERS}
        rounds, answers = [], {}
        for number in range(args.rounds):
            figures = {}
            order = list(benches.values()) if number % 2 == 0 else list(benches.values())[::-1]
            for bench in order:
                say(f"round {number + 1}: {bench.driver.name} ...")
                reads, answers[bench.driver.name] = bench.reads(args.reads)
                figures[bench.driver.name] = (bench.write_batches(args.batches), reads,
                                              bench.points(args.blocks, args.calls, keys))
            rounds.append(figures)
        contents = {name: bench.contents() for name, bench in benches.items()}
        for bench in benches.values():
            bench.close()
    load_after = os.getloadavg()

    print(f"# sqlite3 beside apsw: {args.rounds} interleaved rounds\n")
    print(f"- write: {args.batches} batches per driver and round of BEGIN IMMEDIATE, {EVENTS:,} events, "
          f"{UPSERTS} rollup upserts, COMMIT (WAL, synchronous = FULL, a PASSIVE checkpoint every "
          f"{CHECKPOINT_CHANGES:,} changes)")
    print(f"- read: one owner's year by day, GROUP BY over {len(rollup):,} rollup_day rows, {args.reads} per round")
    print(f"- point: one rollup_day row by primary key, {args.blocks} blocks of {args.calls:,} calls per round")
    print(f"- load average (1, 5, 15 min): {' '.join(f'{value:.2f}' for value in load_before)} at the start, "
          f"{' '.join(f'{value:.2f}' for value in load_after)} at the end ({os.cpu_count()} cores)")
    print("- ratio: apsw ÷ sqlite3 (batches/s: above 1 apsw is faster; ms and µs: below 1 apsw is faster)")
    print("\n## Medians\n")
    print("| round | write batches/s, sqlite3 | apsw | ratio | read ms, sqlite3 | apsw | ratio "
          "| point µs, sqlite3 | apsw | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for number, figures in enumerate(rounds, start=1):
        print(table_row(str(number), figures))
    pooled = {name: tuple([t for figures in rounds for t in figures[name][part]] for part in range(3)) for name in benches}
    print(table_row("all", pooled))
    print("\n## Drivers\n")
    print("| driver | driver version | SQLite | usage_event rows | rollup_hour rows |")
    print("|---|---|---|---|---|")
    for driver in DRIVERS:
        events, _, hours, _ = contents[driver.name]
        print(f"| {driver.name} | {driver.version} | {driver.sqlite_version} | {events:,} | {hours:,} |")
    print(f"\n- same rows in both databases: {'yes' if contents['sqlite3'] == contents['apsw'] else 'NO'}")
    print(f"- same read answer from both: {'yes' if answers['sqlite3'] == answers['apsw'] else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
