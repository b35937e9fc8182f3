"""The statements that read raw events find them through an index on both engines, never by
reading the whole event table: on PostgreSQL that index leads with owner_id (so that the
table can be distributed by owner), on SQLite with the series."""
import re
import sqlite3

import pytest

from usage_server import create_app, queries
from usage_server.storage import connect

EVENT_STATEMENTS = ("RECENT_EVENTS", "CONFIG_USAGE", "EVENT_BUCKETS", "EVENT_SERIES_TOTALS", "EVENT_BUCKET_SERIES")
PARAMS = {"owner_id": 1, "config_id": "cfg_a", "limit": 20, "lo": 1_772_323_200, "hi": 1_772_928_000,
          "fmt": "%Y-%m-%d", "offset": 0, "shift": "+0 seconds", "align": "+0 seconds"}
INDEX = "usage_event_series_ts"


@pytest.fixture(scope="module")
def sqlite_database(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("plans") / "usage.sqlite")
    create_app({"DATABASE": path})
    conn = sqlite3.connect(path)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def postgres_connection(postgres):
    """A migrated database whose planner may not read a table whole unless nothing else can
    answer: a plan that still does shows the statement cannot use any index."""
    conn = connect(create_app({"DATABASE": postgres.new_schema()}).config)
    conn.execute("SET enable_seqscan = off")
    yield conn
    conn.close()


@pytest.mark.parametrize("name", EVENT_STATEMENTS)
def test_sqlite_reads_events_by_series(sqlite_database, name):
    plan = [row[3] for row in sqlite_database.execute("EXPLAIN QUERY PLAN " + getattr(queries, name), PARAMS)]
    reads = [step for step in plan if " usage_event " in f"{step} "]
    using_index = re.compile(rf"SEARCH usage_event USING (COVERING )?INDEX {INDEX} \(series_id=\?")
    assert reads and all(using_index.match(step) for step in reads), plan


def index_conditions(plan: list[str]) -> list[str]:
    """The condition of every scan of the events' index (on the line after the scan)."""
    scans = [number for number, line in enumerate(plan) if f" {INDEX} " in f"{line} "]
    return [next(line.strip() for line in plan[number + 1:] if "Index Cond:" in line) for number in scans]


@pytest.mark.parametrize("name", EVENT_STATEMENTS)
def test_postgresql_reads_events_by_owner_and_series(postgres_connection, name):
    """Not a whole scan of the index either: its conditions start with the owner."""
    plan = [row[0] for row in postgres_connection.execute("EXPLAIN " + getattr(queries, name), PARAMS)]
    assert not any("Seq Scan on usage_event" in line for line in plan), plan
    conditions = index_conditions(plan)
    assert conditions and all(line.startswith("Index Cond: ((owner_id = ") for line in conditions), plan
