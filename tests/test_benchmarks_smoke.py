"""`python -m benchmarks --smoke` runs every part of the benchmark at a tiny size.

Timings are not checked (CI machines vary); that it runs, that the pre-aggregated
answers equal the raw-event baseline's, and that it leaves no database behind are.
"""
import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

import apsw
import psycopg

REPO = Path(__file__).resolve().parent.parent
QUERIES = ("last_7_days/hour", "last_30_days/day", "current_year/week", "365 days/day")


def test_smoke_run_prints_the_whole_table_with_equal_answers(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--workdir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.strip("|").split("|")]
                                              for line in result.stdout.splitlines() if line.startswith("| "))}
    assert "trivial: GET /v1/model-configs" in rows
    for name in QUERIES + tuple(f"{query} +config" for query in QUERIES):
        median, p95, _, baseline, _, same, http = rows[name]
        assert same == "yes", name  # the same answer as GROUP BY over the raw events
        assert float(median) > 0 and float(p95) >= float(median) and float(http) > 0
        assert float(baseline) >= 0  # written to 0.1 ms: a fast machine's tiny baseline reads 0.0
    for needle in ("seeding: 3,000 events", "2 workers, 1,000-event batches", "live traffic (the last 10 minutes)",
                   "backfill (the last year)", "peak RSS", "## Targets"):
        assert needle in result.stdout
    targets = sections(result.stdout)["Targets, SQLite"]
    assert any(row[0].startswith("ingestion ≥ 40,000 events/s, 2 workers, backfill") for row in targets)
    for target, _, met, missed_by, why in targets:  # a missed target says by how much and why
        assert (met, bool(missed_by), bool(why)) in (("yes", False, False), ("no", True, True)), target
    assert list(tmp_path.iterdir()) == []  # temporary databases deleted


def test_a_missed_target_says_the_factor_it_was_missed_by():
    from benchmarks.__main__ import Check

    assert Check("rate", "", 30_000, 40_000, True, "why").missed_by == "1.33× (25% short)"
    assert Check("ratio", "", 3.0, 2.0, False, "why").missed_by == "1.50× (50% over)"
    assert Check("ratio", "", 2.0, 2.0, False, "why").missed_by == ""  # met exactly
    assert Check("ratio", "", 2.01, 2.0, False, "why").missed_by == "1.00× (0.5% over)"
    assert not Check("rate", "", 39_999, 40_000, True, "why").met
    assert Check("speed-up", "", 0.0, 100, True, "why").missed_by == "inf× (100% short)"  # a baseline timed at 0


def test_zones_smoke_run_compares_every_zone_with_utc_and_the_same_answers(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--zones", "--smoke", "--workdir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| query")]
    zones = ("UTC", "America/Los_Angeles", "Asia/Kolkata", "Asia/Kathmandu")
    assert [(row[0], row[1]) for row in rows] == [(query, zone) for query in (
        "last_30_days/day", "current_year/week", "365 days/day", "last_7_days/hour") for zone in zones]
    for row in rows:
        assert row[-1] == "yes", row  # local days answer exactly what the finer rollups answer
        assert float(row[2]) > 0 and float(row[4]) > 0
    for needle in ("start-up built", "ingestion in-process", "target: every zone within 1.5×"):
        assert needle in result.stdout
    assert list(tmp_path.iterdir()) == []


def sections(markdown: str) -> dict[str, list[list[str]]]:
    """Each `## ` heading's table rows, split into cells (header and rule rows left out)."""
    found, rows = {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            rows = found[line[3:]] = []
        elif line.startswith("| ") and rows is not None and not line.startswith(("| query", "| target")):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return found


def test_postgresql_smoke_run_beside_sqlite(tmp_path, postgres):
    """--engine both: PostgreSQL seeded, timed and checked against its own raw-event baseline,
    then beside SQLite; the session's cluster stands in for the benchmark's own (faster)."""
    env = {**os.environ, "USAGE_SERVER_BENCH_POSTGRES": postgres.superuser_url}
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--engine", "both", "--workdir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    found = sections(result.stdout)
    cases = QUERIES + tuple(f"{query} +config" for query in QUERIES)
    for engine in ("SQLite", "PostgreSQL"):
        (table,) = [rows for heading, rows in found.items() if heading.startswith(f"3,000 events on {engine} ")]
        assert [row[0] for row in table] == ["trivial: GET /v1/model-configs", *cases, "largest: 10,000 day buckets (HTTP only)"]
        for row in table[1:-1]:
            assert row[6] == "yes", (engine, row)  # the same answer as GROUP BY over the raw events
    beside = found["PostgreSQL beside SQLite at 3,000 events"]
    assert [row[0] for row in beside] == ["trivial: GET /v1/model-configs", *cases, "largest: 10,000 day buckets"]
    for name, sqlite_ms, postgresql_ms, ratio, _ in beside:  # the ratio of the times, each rounded to 0.005
        sqlite_ms, postgresql_ms = float(sqlite_ms), float(postgresql_ms)
        low, high = (postgresql_ms - 0.005) / (sqlite_ms + 0.005), (postgresql_ms + 0.005) / (sqlite_ms - 0.005)
        assert low - 0.005 <= float(ratio.rstrip("×")) <= high + 0.005, name
    targets = {row[0]: row for row in found["Targets, PostgreSQL"]}
    assert "every usage query within 2× of SQLite's time over HTTP" in targets
    for needle in ("synchronous_commit=on, rollups included: live traffic", "then VACUUM (ANALYZE) in",
                   "- ingestion over HTTP, 2 workers, 1,000-event batches (PostgreSQL ÷ SQLite): live traffic",
                   "## Targets, SQLite"):
        assert needle in result.stdout
    assert list(tmp_path.iterdir()) == []
    with psycopg.connect(postgres.superuser_url) as conn:  # the benchmark's databases dropped
        assert conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench%'").fetchall() == []


def test_otlp_ingestion_smoke_run_prints_both_rates_their_ratio_and_the_same_usage(tmp_path):
    """POST /v1/traces beside POST /v1/model-usage/events with the same usage: both rates and
    their ratio are printed, and the two owners' answers are equal (timings are not checked)."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.ingest_otlp", "--smoke", "--dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if ":" in line}
    events = float(lines["POST /v1/model-usage/events"].split()[0].replace(",", ""))
    spans = float(lines["POST /v1/traces (protobuf)"].split()[0].replace(",", ""))
    assert events > 0 and spans > 0
    assert abs(float(lines["OTLP / events"].split("x")[0]) - spans / events) <= 0.0051  # of the unrounded rates
    assert lines["same usage stored by both"] == "yes"
    assert list(tmp_path.iterdir()) == []  # the temporary database deleted


def test_sqlite_drivers_smoke_run_prints_both_drivers_their_versions_and_the_same_rows(tmp_path):
    """sqlite3 beside apsw: every median printed, each ratio apsw ÷ sqlite3 of the printed figures
    (3 significant digits, ratio to 0.01), both SQLite versions, and equal databases afterwards."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.sqlite_drivers", "--smoke", "--dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = sections(result.stdout)
    header, *medians = found["Medians"]
    assert header == ["round", "write batches/s, sqlite3", "apsw", "ratio", "read ms, sqlite3", "apsw", "ratio",
                      "point µs, sqlite3", "apsw", "ratio"]
    assert [row[0] for row in medians] == ["1", "2", "all"]
    for row in medians:
        for start in (1, 4, 7):  # write, read, point
            sqlite3_value, apsw_value = float(row[start].replace(",", "")), float(row[start + 1].replace(",", ""))
            ratio = float(row[start + 2].rstrip("×"))
            assert sqlite3_value > 0 and apsw_value > 0 and ratio > 0, row
            assert abs(ratio - apsw_value / sqlite3_value) <= 0.011 * apsw_value / sqlite3_value + 0.005, row
    header, *drivers = found["Drivers"]
    assert header == ["driver", "driver version", "SQLite", "usage_event rows", "rollup_hour rows"]
    events = f"{2 * 3 * 1_000:,}"  # 2 rounds x 3 batches x 1,000 events, per driver
    assert drivers[0][:4] == ["sqlite3", f"Python {platform.python_version()}", sqlite3.sqlite_version, events]
    assert drivers[1][:4] == ["apsw", apsw.apswversion(), apsw.sqlite_lib_version(), events]
    assert drivers[0][4] == drivers[1][4] and int(drivers[0][4]) > 0
    for needle in ("same rows in both databases: yes", "same read answer from both: yes", "load average"):
        assert needle in result.stdout
    assert list(tmp_path.iterdir()) == []  # the temporary databases deleted
