"""The database layer: connections per request, pragmas, configuration, safe start-up."""
import os
import sqlite3
from types import SimpleNamespace

import pytest

from conftest import bearer
from usage_server import create_app, reports
from usage_server.auth import create_key
from usage_server.storage import DatabaseSetupError, check_database_path, connections, get_db, write_transaction
from usage_server.storage import sqlite as storage_sqlite

pytestmark = pytest.mark.sqlite_only  # SQLite's connections, pragmas and files (PostgreSQL: test_postgres_faults.py)

SQLITE_MAGIC = b"SQLite format 3\x00"


def test_get_db_is_one_connection_per_context_closed_at_teardown(app):
    with app.app_context():
        conn = get_db()
        assert conn is get_db()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")


def idle(conn) -> bool:
    """Closed, or open with nothing pending (a connection kept for the thread's next request)."""
    try:
        return not conn.in_transaction
    except sqlite3.ProgrammingError:  # closed
        return True


def test_requests_leave_no_connection_busy_even_when_they_fail(app, client, make_key, monkeypatch):
    key = make_key()
    opened = []
    original = storage_sqlite.connect

    def recording_connect(*args, **kwargs):
        opened.append(original(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(storage_sqlite, "connect", recording_connect)
    urls = ["/health", "/v1/model-usage", "/v1/model-usage?period=nonsense", "/v1/model-configs"]
    for url in urls:
        client.get(url, headers=bearer(key))
        assert 1 <= len(opened) <= urls.index(url) + 1
        assert all(idle(conn) for conn in opened), url

    def fail_inside_the_read_transaction(conn, *args):
        assert conn.in_transaction
        raise RuntimeError("failed mid-read")

    monkeypatch.setattr(reports, "model_usage", fail_inside_the_read_transaction)
    assert client.get("/v1/model-usage", headers=bearer(key)).status_code == 500
    assert all(idle(conn) for conn in opened)


def pragmas(conn):
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("busy_timeout", "journal_mode", "synchronous", "foreign_keys")}


def test_pragmas_are_in_effect_on_request_connections(app):
    with app.app_context():
        assert pragmas(get_db()) == {"busy_timeout": 200, "journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}


def test_foreign_keys_are_enforced(app):
    with app.app_context():
        conn = get_db()
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO api_key (id, owner_id, key_hash, scopes, created_at)"
                         " VALUES ('k', 999, 'h', 'read', 'now')")


class RecordingConnection:
    """Wraps a connection and remembers every statement it executes."""

    def __init__(self, conn):
        object.__setattr__(self, "conn", conn)
        object.__setattr__(self, "statements", [])

    def execute(self, sql, *args):
        self.statements.append(sql)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)

    def __setattr__(self, name, value):
        setattr(self.conn, name, value)


def test_busy_timeout_is_set_before_anything_else(app, monkeypatch):
    opened = []

    def connect(*args, **kwargs):
        opened.append(RecordingConnection(sqlite3.connect(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(storage_sqlite, "sqlite3", SimpleNamespace(**{**vars(sqlite3), "connect": connect}))
    conn = connections.connect(app.config)
    statements = [sql.split("=")[0].strip() for sql in opened[0].statements]
    conn.close()
    assert statements[0] == "PRAGMA busy_timeout"
    assert {"PRAGMA journal_mode", "PRAGMA synchronous", "PRAGMA foreign_keys"} <= set(statements)


@pytest.mark.parametrize("setting, value", [("OFF", 0), ("NORMAL", 1), ("normal", 1), ("FULL", 2), ("EXTRA", 3)])
def test_synchronous_follows_the_configuration(tmp_path, setting, value):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "usage.sqlite"), "SYNCHRONOUS": setting})
    with app.app_context():
        assert pragmas(get_db())["synchronous"] == value


@pytest.mark.parametrize("setting", ["sometimes", "2; DROP TABLE owner", ""])
def test_unknown_synchronous_setting_is_refused(tmp_path, setting):
    with pytest.raises(ValueError, match="SYNCHRONOUS"):
        create_app({"TESTING": True, "DATABASE": str(tmp_path / "usage.sqlite"), "SYNCHRONOUS": setting})


def test_write_transaction_rolls_back_on_error(app):
    with app.app_context():
        conn = get_db()
        with pytest.raises(RuntimeError):
            with write_transaction(conn):
                conn.execute("INSERT INTO owner (name, created_at) VALUES ('ghost', 'now')")
                raise RuntimeError("abandon")
        assert not conn.in_transaction
        assert conn.execute("SELECT COUNT(*) FROM owner WHERE name = 'ghost'").fetchone()[0] == 0


# --- configuration: defaults < USAGE_SERVER_* environment < test mapping ---------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("USAGE_SERVER_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(tmp_path, clean_env):
    app = create_app({"DATABASE": str(tmp_path / "usage.sqlite")})
    assert {name: app.config[name] for name in ("DATA_SOURCE", "BUSY_TIMEOUT_MS", "SYNCHRONOUS", "QUERY_TIME_LIMIT_MS",
                                                "DEFAULT_TIMEZONE", "MAX_CONTENT_LENGTH", "RETRY_AFTER_SECONDS")} == {
        "DATA_SOURCE": "usage-server-sqlite", "BUSY_TIMEOUT_MS": 5000, "SYNCHRONOUS": "FULL",
        "QUERY_TIME_LIMIT_MS": 10000, "DEFAULT_TIMEZONE": "UTC", "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
        "RETRY_AFTER_SECONDS": 1,
    }


def test_environment_overrides_defaults_and_tests_override_the_environment(tmp_path, clean_env, make_key):
    clean_env.setenv("USAGE_SERVER_DATABASE", str(tmp_path / "from-env.sqlite"))
    clean_env.setenv("USAGE_SERVER_BUSY_TIMEOUT_MS", "1234")
    clean_env.setenv("USAGE_SERVER_RETRY_AFTER_SECONDS", "7")
    clean_env.setenv("USAGE_SERVER_DATA_SOURCE", "env-store")
    clean_env.setenv("USAGE_SERVER_DEFAULT_TIMEZONE", "Asia/Kolkata")
    app = create_app({"TESTING": True, "DATA_SOURCE": "test-store", "RETRY_AFTER_SECONDS": 3})
    assert app.config["DATABASE"] == str(tmp_path / "from-env.sqlite")
    assert (tmp_path / "from-env.sqlite").read_bytes()[:16] == SQLITE_MAGIC
    assert app.config["BUSY_TIMEOUT_MS"] == 1234
    assert app.config["DATA_SOURCE"] == "test-store"
    assert app.config["RETRY_AFTER_SECONDS"] == 3
    with app.app_context():
        assert pragmas(get_db())["busy_timeout"] == 1234
    env_only = create_app()
    assert env_only.config["DATA_SOURCE"] == "env-store" and env_only.config["RETRY_AFTER_SECONDS"] == 7
    with env_only.app_context():
        with write_transaction(get_db()):
            _, key = create_key(get_db(), "acme", ["read"])
    meta = env_only.test_client().get("/v1/model-usage", headers=bearer(key)).get_json()["meta"]
    assert (meta["dataSource"], meta["timezone"]) == ("env-store", "Asia/Kolkata")


# --- start-up: the database path is checked before anything is created -------------------------


def test_missing_parent_directory_is_a_clear_error(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "usage.sqlite"
    with pytest.raises(DatabaseSetupError, match="does not exist"):
        create_app({"DATABASE": str(path)})
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("content", [b"precious notes\n", b"abc", b"SQLite format 2\x00" + b"\x00" * 100,
                                     b"\x00" * 4096])
def test_a_file_that_is_not_sqlite_is_never_touched(tmp_path, content):
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with pytest.raises(DatabaseSetupError, match="not an SQLite database"):
        create_app({"DATABASE": str(path)})
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DatabaseSetupError, match="Is a directory"):
        check_database_path(str(tmp_path))
    with pytest.raises(DatabaseSetupError):
        create_app({"DATABASE": str(tmp_path)})


def test_cli_refuses_a_file_swapped_for_one_that_is_not_sqlite(app, runner):
    path = app.config["DATABASE"]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    with open(path, "wb") as handle:
        handle.write(b"not a database at all")
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 1
    assert "not an SQLite database" in result.output
    with open(path, "rb") as handle:
        assert handle.read() == b"not a database at all"


def test_an_empty_file_or_memory_is_accepted(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    app = create_app({"DATABASE": str(path)})
    with app.app_context():
        assert get_db().execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] > 0
    check_database_path(":memory:")


def test_start_up_creates_the_schema_once_and_keeps_existing_data(tmp_path):
    path = tmp_path / "usage.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('kept')")
    conn.commit()
    conn.close()
    app = create_app({"DATABASE": str(path)})
    with app.app_context():
        conn = get_db()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"notes", "owner", "api_key", "model", "model_config", "usage_event", "rollup_day"} <= tables
        with write_transaction(conn):
            conn.execute("INSERT INTO owner (name, created_at) VALUES ('acme', 'now')")
            conn.execute("INSERT INTO model (model_id, provider, display_name) VALUES ('gpt-4o', 'OpenAI', 'Renamed')")
    app = create_app({"DATABASE": str(path)})
    with app.app_context():
        conn = get_db()
        assert [tuple(row) for row in conn.execute("SELECT body FROM notes")] == [("kept",)]
        assert [tuple(row) for row in conn.execute("SELECT name FROM owner")] == [("acme",)]
        assert conn.execute("SELECT display_name FROM model WHERE model_id = 'gpt-4o'").fetchone()[0] == "Renamed"
