"""FAST_TIMEZONES: local days, weeks and hours kept per UTC offset, registered and dropped at start-up.

Whenever a server starts, the local rollups hold exactly the offsets its zones use, and
their rows equal both a rebuild from the events and a plain-Python aggregate, whether
the offsets were registered before the data, after it, or by several processes at once.
"""
import multiprocessing
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import create_config, post_events
from oracle import LOCAL_TABLES, local_rollups
from seed.generator import seed_owner
from stored import EVENT_ROWS, offsets, rows, run
from stored import local_rollups as stored_local_rollups
from usage_server import create_app
from usage_server.storage import connect, migrations

FORK = multiprocessing.get_context("fork")
NONE_STORED = ([], dict.fromkeys(LOCAL_TABLES, []))
# Kolkata +5:30; Kathmandu +5:30 until 1986, then +5:45; Chatham +12:45 and +13:45; Los Angeles -8 and -7
FAST = "Asia/Kolkata,Asia/Kathmandu,Pacific/Chatham,America/Los_Angeles"
FAST_OFFSETS = [-28_800, -25_200, 19_800, 20_700, 45_900, 49_500]
END = int(datetime(2026, 3, 18, 15, 30, tzinfo=timezone.utc).timestamp())
RELEASE_0_1_0 = Path(__file__).resolve().parent / "fixtures" / "release-0.1.0.sqlite"


def start(database: str, fast: str = "", **config):
    return create_app({"TESTING": True, "DATABASE": database, "FAST_TIMEZONES": fast, **config})


def stored(database: str) -> tuple[list[int], dict[str, list[tuple]]]:
    return offsets(database), stored_local_rollups(database)


def python_local(database: str, offsets: list[int]) -> dict[str, list[tuple]]:
    """The stored events summed per local day, week and hour at each offset, with datetime."""
    return local_rollups(rows(database, EVENT_ROWS), offsets)


def rebuilt(app) -> dict[str, list[tuple]]:
    result = app.test_cli_runner().invoke(args=["rebuild-rollups"])
    assert result.exit_code == 0, result.output
    return stored(app.config["DATABASE"])[1]


@pytest.fixture
def seeded(database) -> str:
    """A database of the test's engine with usage of two owners and no local days."""
    conn = connect(start(database).config)
    assert seed_owner(conn, "demo", events=4_000, days=120, seed=3, end=END) == 4_000
    assert seed_owner(conn, "other", events=600, days=400, seed=4, end=END) == 600
    conn.close()
    assert stored(database) == NONE_STORED
    return database


def test_registering_zones_after_the_data_builds_what_a_rebuild_builds(seeded):
    app = start(seeded, FAST)
    offsets, built = stored(seeded)
    assert offsets == FAST_OFFSETS
    assert built == python_local(seeded, offsets) and all(built.values())
    assert {row[1] for row in built["rollup_local_hour"]} == {19_800, 20_700, 45_900, 49_500}  # not whole hours
    assert rebuilt(app) == built
    start(seeded, FAST)  # started again: nothing changes
    assert stored(seeded) == (offsets, built)


@pytest.mark.sqlite_only  # PostgreSQL support came with schema versions: no PostgreSQL database predates them
def test_a_database_from_before_local_hours_gets_them_at_start(seeded):
    start(seeded, FAST)
    # as the schema was, with the offsets registered, and before versions were recorded (so
    # without the columns later migrations added to release 0.1.0's tables)
    run(seeded, "DROP TABLE rollup_local_hour", "DROP TABLE schema_version", *columns_added_since_0_1_0(seeded))
    start(seeded, FAST)
    offsets, rows = stored(seeded)
    assert offsets == FAST_OFFSETS
    assert rows == python_local(seeded, offsets) and all(rows.values())


def columns_added_since_0_1_0(database: str) -> list[str]:
    """ALTER TABLE ... DROP COLUMN for each column a table of the release 0.1.0 fixture lacks."""
    release = sqlite3.connect(f"{RELEASE_0_1_0.as_uri()}?immutable=1", uri=True)
    current = sqlite3.connect(database)
    try:
        return [f"ALTER TABLE {table} DROP COLUMN {column}"
                for (table,) in release.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                for (column,) in current.execute("SELECT name FROM pragma_table_info(?)", (table,))
                if table != "rollup_local_hour"  # dropped whole
                and column not in {name for (name,) in release.execute("SELECT name FROM pragma_table_info(?)", (table,))}]
    finally:
        release.close()
        current.close()


def test_unregistering_zones_removes_their_days_only(seeded):
    start(seeded, FAST)
    start(seeded, "Asia/Kolkata", DEFAULT_TIMEZONE="America/Los_Angeles")  # Kathmandu and Chatham dropped
    offsets, rows = stored(seeded)
    assert offsets == [-28_800, -25_200, 19_800]
    assert rows == python_local(seeded, offsets)
    start(seeded)  # UTC needs none
    assert stored(seeded) == NONE_STORED


def test_ingestion_keeps_registered_days(seeded, make_key):
    app = start(seeded, FAST)
    client, key = app.test_client(), make_key("acme")
    create_config(client, key, "cfg_a")
    events = [{"id": f"e{n}", "timestamp": f"2026-03-{8 + n % 3:02d}T{n % 24:02d}:{n * 7 % 60:02d}:00Z",
               "modelConfigId": "cfg_a", "promptTokens": n, "completionTokens": 2 * n,
               "billingSource": "user" if n % 4 == 0 else "platform"} for n in range(200)]
    post_events(client, key, events[:120])
    post_events(client, key, events[80:])  # overlapping: duplicates are not counted again
    offsets, rows = stored(seeded)
    assert rows == python_local(seeded, offsets)
    assert rebuilt(app) == rows


def start_in_process(database: str) -> None:
    start(database, FAST, BUSY_TIMEOUT_MS=1)  # start-up waits for the worker that builds, whatever the setting


def test_workers_starting_at_once_register_each_offset_once(seeded):
    workers = [FORK.Process(target=start_in_process, args=(seeded,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * 4
    offsets, rows = stored(seeded)
    assert offsets == FAST_OFFSETS
    assert rows == python_local(seeded, offsets)


def test_the_setting_comes_from_the_environment_and_refuses_unknown_names(database, monkeypatch):
    monkeypatch.setenv("USAGE_SERVER_FAST_TIMEZONES", " Asia/Kolkata, Pacific/Chatham ,")
    app = create_app({"TESTING": True, "DATABASE": database})
    assert app.config["FAST_TIMEZONES"] == ("Asia/Kolkata", "Pacific/Chatham")
    assert stored(database)[0] == [19_800, 45_900, 49_500]
    assert start(database, ["Asia/Kathmandu"]).config["FAST_TIMEZONES"] == ("Asia/Kathmandu",)
    for bad in ("Asia/Kolkata,Mars/Olympus", "asia/kolkata", 5, [None]):
        with pytest.raises(ValueError, match="FAST_TIMEZONES"):
            start(database, bad)
    assert stored(database)[0] == [19_800, 20_700]  # a refused setting changes nothing
