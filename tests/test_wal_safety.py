"""SQLite's WAL: one checkpointer at a time (the WAL-reset bug of SQLite 3.7.0 to 3.51.2), a WAL
kept small by writers and bulk writers, /health's warning, and a seed beside a serving app that
never makes it answer 503."""
import fcntl
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import bearer, create_config
from support import open_database
from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import sqlite as engine

pytestmark = pytest.mark.sqlite_only


@pytest.mark.parametrize("version, affected", [("3.6.23", False), ("3.7.0", True), ("3.40.1", True),
                                               ("3.51.2", True), ("3.51.3", False), ("3.52.0", False)])
def test_the_affected_versions(version, affected):
    assert engine.has_wal_reset_bug(version) is affected


def test_health_names_the_sqlite_version_and_warns_when_it_is_affected(client, monkeypatch):
    body = client.get("/health").get_json()
    assert body["sqliteVersion"] == sqlite3.sqlite_version
    if engine.has_wal_reset_bug():
        assert "WAL-reset bug" in body["warnings"][0] and sqlite3.sqlite_version in body["warnings"][0]
    else:
        assert "warnings" not in body
    monkeypatch.setattr(engine, "has_wal_reset_bug", lambda: False)
    assert "warnings" not in client.get("/health").get_json()


def test_no_connection_checkpoints_by_itself(app, database):
    conn = engine.connect(app.config)
    try:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == engine.JOURNAL_SIZE_LIMIT
        assert conn.lock_path == f"{Path(database).resolve()}-checkpoint"
    finally:
        conn.close()


def test_a_checkpoint_waits_for_or_skips_another_checkpointer(app):
    conn = engine.connect(app.config)
    other = os.open(conn.lock_path, os.O_RDWR | os.O_CREAT)  # another process's hold, as flock sees it
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        assert engine.checkpoint(conn, wait=False) is False
        fcntl.flock(other, fcntl.LOCK_UN)
        assert engine.checkpoint(conn, wait=False) is True
    finally:
        os.close(other)
        conn.close()


def test_writers_keep_the_wal_small(app, client, make_key, monkeypatch, database):
    monkeypatch.setattr(engine, "CHECKPOINT_CHANGES", 200)
    key = make_key()
    create_config(client, key, "cfg_a")
    batches = 300  # each commit adds at least one page (4 KiB) to the WAL: 1.2 MB unless checkpointed
    for batch in range(batches):
        events = [{"id": f"e{batch}-{index}", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a",
                   "promptTokens": index, "completionTokens": batch} for index in range(20)]
        assert client.post("/v1/model-usage/events", json={"events": events}, headers=bearer(key)).status_code == 200
    with open_database(database) as conn:
        frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]  # frames in the WAL now
    assert frames < 100 < batches  # each 20-event batch changes about 100 rows: a checkpoint every other one


def test_a_worker_keeps_its_connection_across_checkpoints(app, client, make_key, monkeypatch, database):
    """A checkpoint rewrites the file but leaves it the same file: the worker's connection (its
    page cache, its prepared statements) is kept, not opened again after every batch."""
    monkeypatch.setattr(engine, "CHECKPOINT_CHANGES", 50)
    key = make_key()
    create_config(client, key, "cfg_a")
    opened = []
    real_connect = engine.connect
    monkeypatch.setattr(engine, "connect", lambda *args, **kwargs: opened.append(1) or real_connect(*args, **kwargs))
    for batch in range(20):  # each ~100-row batch is past CHECKPOINT_CHANGES: a checkpoint after each
        events = [{"id": f"k{batch}-{index}", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a",
                   "promptTokens": index, "completionTokens": batch} for index in range(20)]
        assert client.post("/v1/model-usage/events", json={"events": events}, headers=bearer(key)).status_code == 200
        assert client.get("/v1/model-usage", headers=bearer(key)).status_code == 200
    with open_database(database) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] < 100  # the checkpoints did run
    assert len(opened) <= 1  # at most the first request's


def test_a_seed_beside_a_serving_app_never_makes_it_answer_503(tmp_path, database):
    """The seed commits in steps: the app's writes go through between them, none waits out its
    busy timeout, and the seed's events are seen arriving step by step."""
    app = create_app({"TESTING": True, "DATABASE": database})  # the default busy timeout
    client = app.test_client()
    conn = engine.connect(app.config)
    with engine.write_transaction(conn):
        key = create_key(conn, "acme", ["read", "write"])[1]
    create_config(client, key, "cfg_a")
    events = 60_000
    seed = subprocess.Popen([str(Path(sys.executable).parent / "usage-server"), "seed", "--events", str(events),
                             "--owner", "demo"], env={**os.environ, "USAGE_SERVER_DATABASE": database},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    statuses, seen, writes_during = [], set(), 0
    batch = 0
    while True:
        running = seed.poll() is None
        response = client.post("/v1/model-usage/events", headers=bearer(key), json={"events": [
            {"id": f"w{batch}", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 1,
             "completionTokens": 1}]})
        statuses.append(response.status_code)
        assert client.get("/v1/model-usage", headers=bearer(key)).status_code == 200
        batch += 1
        count = conn.execute("SELECT COUNT(*) FROM usage_event WHERE owner_id = "
                             "(SELECT id FROM owner WHERE name = 'demo')").fetchone()[0]
        if 0 < count < events and seed.poll() is None:
            seen.add(count)
            writes_during += 1
        if not running:
            break
    output = seed.communicate()[0].decode()
    conn.close()
    assert seed.returncode == 0, output
    assert set(statuses) == {200}
    assert len(seen) >= 3 and writes_during >= 3  # writes went through between the seed's steps
    assert f"Seeded {events} events" in output
