"""The fault matrix: every way the database can fail, and what the server answers."""
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from gunicorn.config import Config as GunicornConfig

from conftest import assert_error, bearer, create_config, post_events
from gunicorn_server import free_port, gunicorn, gunicorn_command, server_env
from support import prepare_database
from usage_server import create_app
from usage_server.storage import DatabaseSetupError

USAGE = "/v1/model-usage?startDate=2026-03-01&endDate=2026-03-07"
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


def fill_quarter_rollups(path, series=20, days=400):
    """Many quarter-hour rollup rows: an hourly report in a +05:45 zone must read them all."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO usage_series (owner_id, config_id, model_id, provider, model_name) "
        "SELECT 1, 'cfg_' || i, 'model-' || i, 'Acme', 'model-' || i FROM n", (series,))
    conn.execute(
        "WITH RECURSIVE slot(s) AS (SELECT 1735689600 UNION ALL SELECT s + 900 FROM slot WHERE s < 1735689600 + ?) "
        "INSERT INTO rollup_quarter SELECT 1, s, usage_series.id, 1, 0, 10, 0, 5, 0 FROM slot, usage_series",
        (days * 86_400,))
    conn.execute("COMMIT")
    conn.close()


RUNAWAY = "/v1/model-usage?startDate=2025-01-01&endDate=2026-01-31&granularity=hour&timezone=Asia/Kathmandu"


@pytest.fixture
def big_database(tmp_path):
    path = tmp_path / "big.sqlite"
    key = prepare_database(path)["acme"]
    fill_quarter_rollups(path)
    return path, key


def test_runaway_query_is_cut_off_and_answered_503(big_database):
    path, key = big_database
    unlimited = create_app({"DATABASE": str(path), "QUERY_TIME_LIMIT_MS": 600_000}).test_client()
    started = time.monotonic()
    assert unlimited.get(RUNAWAY, headers=bearer(key)).status_code == 200
    full_time = time.monotonic() - started
    limited = create_app({"DATABASE": str(path), "QUERY_TIME_LIMIT_MS": 100}).test_client()
    started = time.monotonic()
    unavailable(limited.get(RUNAWAY, headers=bearer(key)), "the query ran past the server's time limit")
    cut_time = time.monotonic() - started
    assert cut_time < full_time / 2, (cut_time, full_time)
    assert limited.get("/health").status_code == 200


@pytest.mark.slow
def test_runaway_query_is_answered_before_gunicorns_worker_timeout(big_database, tmp_path):
    path, key = big_database
    log = tmp_path / "gunicorn.log"
    with gunicorn(path, log, workers=1, timeout=1, QUERY_TIME_LIMIT_MS=200) as base:
        response = requests.get(base + RUNAWAY, headers=bearer(key), timeout=30)
        assert response.status_code == 503
        assert response.json() == {"error": "the query ran past the server's time limit", "code": "service_unavailable"}
        assert requests.get(f"{base}/health", timeout=30).status_code == 200
    assert "WORKER TIMEOUT" not in log.read_text()


def test_default_query_limit_is_shorter_than_gunicorns_default_timeout(app):
    assert app.config["QUERY_TIME_LIMIT_MS"] < GunicornConfig().timeout * 1000


# --- GET /health ---------------------------------------------------------------------------------------------


def test_health_reports_sqlite_and_the_pragmas_in_effect(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "sqliteVersion": sqlite3.sqlite_version,
        "pragmas": {"journal_mode": "wal", "synchronous": "FULL", "busy_timeout": 200, "foreign_keys": 1},
    }
