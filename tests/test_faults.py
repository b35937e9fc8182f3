"""The fault matrix: every way the database can fail, and what the server answers."""
import math
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from gunicorn.config import Config as GunicornConfig

from conftest import assert_error, bearer, create_config, post_events
from gunicorn_server import free_port, gunicorn, gunicorn_command, server_env
from support import prepare_database
from usage_server import create_app
from usage_server.storage import DatabaseSetupError
from usage_server.storage import sqlite as storage_sqlite

USAGE = "/v1/model-usage?startDate=2026-03-01&endDate=2026-03-07"
pytestmark = pytest.mark.sqlite_only  # faults of an SQLite file (PostgreSQL's: test_postgres_faults.py)
NOT_A_DATABASE = b"owner,tokens\nacme,12\n"  # a user's file that happens to sit at the path


def events(prefix, count, config_id="cfg_a"):
    return [{"id": f"{prefix}{i}", "timestamp": f"2026-03-0{1 + i % 7}T10:{i % 60:02d}:00Z", "modelConfigId": config_id,
             "promptTokens": 100 + i, "completionTokens": i % 50} for i in range(count)]


def reads(client, key):
    """Every read endpoint's status and body, to compare before and after a fault."""
    paths = (USAGE, f"{USAGE}&granularity=hour", "/v1/model-usage/cfg_a", "/v1/model-configs/usage")
    return {path: (r.status_code, r.get_json()) for path in paths for r in [client.get(path, headers=bearer(key))]}


def unavailable(response, message):
    """A 503 in the contract's shape, with Retry-After and the cause in its sentence."""
    body = assert_error(response, 503, "service_unavailable")
    assert body == {"error": message, "code": "service_unavailable"}
    assert response.headers["Retry-After"] == "1"


def stored_events(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM usage_event").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def loaded(app, client, make_key):
    """An app with one config and 20 events, and its key."""
    key = make_key()
    create_config(client, key, "cfg_a")
    post_events(client, key, events("e", 20))
    return key


# --- locked past the busy timeout -------------------------------------------------------


def test_locked_database_refuses_writes_with_503_and_serves_reads(app, client, loaded):
    before = reads(client, loaded)
    holder = sqlite3.connect(app.config["DATABASE"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        started = time.monotonic()
        response = client.post("/v1/model-usage/events", json={"events": events("x", 5)}, headers=bearer(loaded))
        waited = time.monotonic() - started
        unavailable(response, "the database is busy, retry shortly")
        assert waited >= app.config["BUSY_TIMEOUT_MS"] / 1000
        body = {"id": "cfg_b", "modelId": "gpt-4o", "provider": "OpenAI"}
        unavailable(client.post("/v1/model-configs", json=body, headers=bearer(loaded)), "the database is busy, retry shortly")
        assert reads(client, loaded) == before
        assert client.get("/health").status_code == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert post_events(client, loaded, events("x", 5)) == {"accepted": 5, "duplicates": 0, "conflicts": 0}


# --- disk full ------------------------------------------------------------------------------


def test_full_database_stores_nothing_and_serves_reads(app, client, loaded):
    path = app.config["DATABASE"]
    conn = sqlite3.connect(path)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    before = reads(client, loaded)
    full = create_app({**app.config, "MAX_PAGE_COUNT": pages + 2}).test_client()
    batch = events("big", 1000)
    unavailable(full.post("/v1/model-usage/events", json={"events": batch}, headers=bearer(loaded)),
                "the database is full; nothing was stored")
    assert stored_events(path) == 20
    assert reads(full, loaded) == before
    assert full.get("/health").status_code == 200
    # room again: the same batch is new, none of it was half-stored by the failed attempt
    assert post_events(client, loaded, batch) == {"accepted": 1000, "duplicates": 0, "conflicts": 0}


# --- read-only database ------------------------------------------------------------------------


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_read_only_database_starts_serves_reads_and_refuses_writes(app, client, loaded, journal_mode):
    before = reads(client, loaded)
    path = Path(app.config["DATABASE"]).with_name("copy.sqlite")  # a file no connection holds
    source, copy = sqlite3.connect(app.config["DATABASE"]), sqlite3.connect(path)
    source.backup(copy)
    assert copy.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()[0] == journal_mode
    source.close()
    copy.close()
    read_only = create_app({**app.config, "DATABASE": f"file:{path}?mode=ro"}).test_client()
    assert reads(read_only, loaded) == before
    health = read_only.get("/health")
    assert health.status_code == 200 and health.get_json()["pragmas"]["journal_mode"] == journal_mode
    message = "the database is read-only; nothing was stored"
    unavailable(read_only.post("/v1/model-usage/events", json={"events": events("x", 3)}, headers=bearer(loaded)), message)
    body = {"id": "cfg_b", "modelId": "gpt-4o", "provider": "OpenAI"}
    unavailable(read_only.post("/v1/model-configs", json=body, headers=bearer(loaded)), message)
    assert stored_events(path) == 20


# --- unusable paths at start-up -------------------------------------------------------------------


def bad_path(tmp_path, kind) -> tuple[Path, str]:
    """(database path, the error's wording) for each unusable path."""
    if kind == "not_a_database":
        path = tmp_path / "usage.sqlite"
        path.write_bytes(NOT_A_DATABASE)
        return path, f"{path} exists and is not an SQLite database"
    return tmp_path / "missing" / "usage.sqlite", f"directory {tmp_path / 'missing'} does not exist"


def assert_untouched(path: Path, kind: str) -> None:
    if kind == "not_a_database":
        assert path.read_bytes() == NOT_A_DATABASE
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    else:
        assert not path.parent.exists()


@pytest.mark.parametrize("kind", ["not_a_database", "missing_directory"])
def test_unusable_path_stops_the_app_factory(tmp_path, kind):
    path, message = bad_path(tmp_path, kind)
    with pytest.raises(DatabaseSetupError) as raised:
        create_app({"DATABASE": str(path)})
    assert raised.value.message == message
    assert_untouched(path, kind)


@pytest.mark.parametrize("kind", ["not_a_database", "missing_directory"])
def test_unusable_path_fails_init_db_with_a_clear_error(tmp_path, kind):
    path, message = bad_path(tmp_path, kind)
    command = [str(Path(sys.executable).with_name("usage-server")), "init-db"]
    result = subprocess.run(command, env=server_env(path), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr == f"Error: {message}\n"
    assert_untouched(path, kind)


@pytest.mark.parametrize("kind", ["not_a_database", "missing_directory"])
def test_unusable_path_stops_gunicorn(tmp_path, kind):
    path, message = bad_path(tmp_path, kind)
    result = subprocess.run(gunicorn_command(free_port(), workers=2), env=server_env(path), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert f"\nError: {message} (USAGE_SERVER_DATABASE={path})\n" in result.stderr  # gunicorn.conf.py's check
    assert result.stderr.count(message) == 1 and "Traceback" not in result.stderr
    assert_untouched(path, kind)


# --- the file replaced or removed while running -------------------------------------------------------


def test_file_replaced_by_another_is_503_and_left_alone(app, client, loaded):
    path = Path(app.config["DATABASE"])
    replacement = path.with_name("other")
    replacement.write_bytes(NOT_A_DATABASE)
    os.replace(replacement, path)
    message = "the database is busy or unavailable, retry shortly"
    unavailable(client.get(USAGE, headers=bearer(loaded)), message)
    unavailable(client.post("/v1/model-usage/events", json={"events": events("x", 3)}, headers=bearer(loaded)), message)
    unavailable(client.get("/health"), message)
    assert path.read_bytes() == NOT_A_DATABASE


def test_file_removed_is_503_and_not_recreated_empty(app, client, loaded):
    path = Path(app.config["DATABASE"])
    path.unlink()
    message = "the database is busy or unavailable, retry shortly"
    unavailable(client.get(USAGE, headers=bearer(loaded)), message)
    unavailable(client.get("/health"), message)
    assert not path.exists()


# --- a runaway query ------------------------------------------------------------------------------------


KATHMANDU = ZoneInfo("Asia/Kathmandu")  # +05:45: its local months are summed from quarter-hour rollup rows
FIRST_YEAR = 2000
SAMPLE_YEARS = 4  # the in-process test's data, and the sample the gunicorn test is sized from
WORKER_TIMEOUT_S = 1  # gunicorn's --timeout in the test, its smallest value
OUTLASTS = 5  # the unlimited report is sized to run this many worker timeouts here and now


def runaway_url(years: int) -> str:
    """A monthly report over `years` local years from FIRST_YEAR: it reads every quarter-hour row."""
    return (f"/v1/model-usage?startDate={FIRST_YEAR}-01-01&endDate={FIRST_YEAR + years - 1}-12-31"
            "&granularity=month&timezone=Asia/Kathmandu")


def fill_quarter_rollups(path, first: int, years: int) -> None:
    """One series' quarter-hour rows over the local years [first, first + years) after FIRST_YEAR."""
    lo, hi = (int(datetime(FIRST_YEAR + year, 1, 1, tzinfo=KATHMANDU).timestamp()) for year in (first, first + years))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # a scratch file: it need not survive a power cut
    conn.execute("BEGIN")
    conn.execute("INSERT OR IGNORE INTO usage_series (id, owner_id, config_id, model_id, provider, model_name) "
                 "VALUES (1, 1, 'cfg_a', 'gpt-4o', 'OpenAI', 'GPT-4o')")
    conn.execute("WITH RECURSIVE slot(s) AS (SELECT ? UNION ALL SELECT s + 900 FROM slot WHERE s + 900 < ?) "
                 "INSERT INTO rollup_quarter (owner_id, slot_start, series_id, requests, unpriced, platform_tokens, "
                 "user_tokens, platform_cost, user_cost) SELECT 1, s, 1, 1, 0, 10, 0, 5, 0 FROM slot", (lo, hi))
    conn.execute("COMMIT")
    conn.close()


@pytest.fixture
def runaway_database(tmp_path):
    """(path, key) of a database with SAMPLE_YEARS of quarter-hour rows; removed afterwards (it may grow large)."""
    path = tmp_path / "runaway.sqlite"
    key = prepare_database(path)["acme"]
    fill_quarter_rollups(path, 0, SAMPLE_YEARS)
    yield path, key
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        path.with_name(name).unlink(missing_ok=True)


class CountingClock:
    """A clock that moves one second each time it is read.

    Under it a deadline trips after a fixed number of progress checks, one per
    PROGRESS_STEPS SQLite VM steps: a time limit becomes a count of work, the same on
    any machine.
    """

    def __init__(self):
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return float(self.readings)


def test_runaway_query_is_cut_off_and_answered_503(runaway_database, monkeypatch):
    path, key = runaway_database
    clock = CountingClock()
    monkeypatch.setattr(storage_sqlite, "clock", clock)
    unlimited = create_app({"DATABASE": str(path), "QUERY_TIME_LIMIT_MS": 10**12}).test_client()
    clock.readings = 0
    assert unlimited.get(runaway_url(SAMPLE_YEARS), headers=bearer(key)).status_code == 200
    full_checks = clock.readings - 1  # the first reading sets the request's deadline
    limited = create_app({"DATABASE": str(path), "QUERY_TIME_LIMIT_MS": 5_000}).test_client()
    clock.readings = 0
    unavailable(limited.get(runaway_url(SAMPLE_YEARS), headers=bearer(key)), "the query ran past the server's time limit")
    # deadline = first reading + 5 s: the 6th check is the first past it, and the statement stops there
    assert clock.readings - 1 == 6
    assert full_checks > 10 * 6, full_checks  # stopped before a tenth of the report's work
    assert limited.get("/health").status_code == 200


def seconds_per_sample(path, key) -> float:
    """The fastest of three unlimited in-process runs of the report over the sample years."""
    client = create_app({"DATABASE": str(path), "QUERY_TIME_LIMIT_MS": 10**12}).test_client()
    runs = []
    for _ in range(3):
        started = time.monotonic()
        assert client.get(runaway_url(SAMPLE_YEARS), headers=bearer(key)).status_code == 200
        runs.append(time.monotonic() - started)
    return min(runs)


@pytest.mark.slow
def test_runaway_query_is_answered_before_gunicorns_worker_timeout(runaway_database, tmp_path):
    """Unlimited, the report would run OUTLASTS worker timeouts: its work grows with the years
    it reads, and the years come from the fastest of three sample runs on this machine, now
    (a busy moment only adds years). The 200 ms limit answers it with a 503, and gunicorn
    never has to kill the worker."""
    path, key = runaway_database
    years = max(SAMPLE_YEARS, math.ceil(SAMPLE_YEARS * OUTLASTS * WORKER_TIMEOUT_S / seconds_per_sample(path, key)))
    fill_quarter_rollups(path, SAMPLE_YEARS, years - SAMPLE_YEARS)
    log = tmp_path / "gunicorn.log"
    with gunicorn(path, log, workers=1, timeout=WORKER_TIMEOUT_S, QUERY_TIME_LIMIT_MS=200) as base:
        response = requests.get(base + runaway_url(years), headers=bearer(key), timeout=120)
        assert response.status_code == 503
        assert response.json() == {"error": "the query ran past the server's time limit", "code": "service_unavailable"}
        assert requests.get(f"{base}/health", timeout=120).status_code == 200
    assert "WORKER TIMEOUT" not in log.read_text()


def test_default_query_limit_is_shorter_than_gunicorns_default_timeout(app):
    assert app.config["QUERY_TIME_LIMIT_MS"] < GunicornConfig().timeout * 1000


# --- GET /health ---------------------------------------------------------------------------------------------


def test_health_reports_sqlite_and_the_pragmas_in_effect(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    body.pop("warnings", None)  # the WAL-reset warning: tests/test_wal_safety.py
    assert body == {
        "status": "ok",
        "engine": "sqlite",
        "version": sqlite3.sqlite_version,
        "sqliteVersion": sqlite3.sqlite_version,
        "pragmas": {"journal_mode": "wal", "synchronous": "FULL", "busy_timeout": 200, "foreign_keys": 1},
    }
