"""Shared fixtures: an app on a temporary database of each engine, clients, keys, a pinned clock.

Every test that takes `database` (or `app`, `client`, ...) runs once on SQLite and once on
PostgreSQL, unless it is marked `sqlite_only` (a fault of a file, say): then it runs on
SQLite alone, and is not counted as skipped. PostgreSQL runs on a throwaway cluster the
session starts (tests/postgres_cluster.py); where none can be started those tests skip
with one reason, except under USAGE_SERVER_REQUIRE_POSTGRES=1 (CI), where they fail.
"""
import os
from datetime import datetime, timezone

import pytest

import postgres_cluster

from usage_server import api, create_app
from usage_server.auth import create_key
from usage_server.storage import close_pools, connect, write_transaction

FROZEN_NOW = datetime(2026, 3, 18, 15, 30, tzinfo=timezone.utc)  # a Wednesday


ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    if "engine" in metafunc.fixturenames:
        engines = ENGINES[:1] if metafunc.definition.get_closest_marker("sqlite_only") else ENGINES
        metafunc.parametrize("engine", engines, scope="module")


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL cluster (started on first use, stopped at the end)."""
    reason = postgres_cluster.unavailable_reason()
    if reason:
        if os.environ.get("USAGE_SERVER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here: {reason}")
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    cluster = postgres_cluster.Cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def new_database(request, tmp_path_factory):
    """new_database(engine) -> a new, empty database: an SQLite path or a PostgreSQL URL.
    Pooled connections to a PostgreSQL one are closed when the module that made it ends."""

    def new(engine: str) -> str:
        if engine == "sqlite":
            return str(tmp_path_factory.mktemp("usage") / "usage.sqlite")
        url = request.getfixturevalue("postgres").new_schema()
        made.append(url)
        return url

    made = []
    yield new
    for url in made:
        close_pools(url)


@pytest.fixture(autouse=True, scope="module")
def _close_module_pools():
    """Each module's PostgreSQL databases keep no connection open after it (the cluster's
    connection slots are shared by the whole session)."""
    yield
    close_pools()


@pytest.fixture
def database(engine, new_database, tmp_path):
    """A new, empty database of the test's engine (SQLite: usage.sqlite in the test's tmp_path)."""
    if engine == "sqlite":
        yield str(tmp_path / "usage.sqlite")
        return
    url = new_database(engine)
    yield url
    close_pools(url)


@pytest.fixture
def app(database):
    app = create_app({"TESTING": True, "DATABASE": database, "BUSY_TIMEOUT_MS": 200})
    yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def frozen_now(monkeypatch):
    """Pin "now" (and so "today") for every request."""
    monkeypatch.setattr(api, "utc_now", lambda: FROZEN_NOW)
    return FROZEN_NOW


@pytest.fixture
def make_key(app):
    """make_key(owner, scopes=("read", "write")) -> raw key."""

    def make(owner="acme", scopes=("read", "write")):
        conn = connect(app.config)
        with write_transaction(conn):
            _, raw = create_key(conn, owner, list(scopes))
        conn.close()
        return raw

    return make


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def assert_error(response, status, code=None, path=None):
    """Every error has the contract's shape; optionally check its code and a detail path."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["code"], str) and body["code"] == body["code"].lower()
    if code is not None:
        assert body["code"] == code
    for item in body.get("details", []):
        assert isinstance(item["message"], str) and "path" in item
    if path is not None:
        assert path in [item["path"] for item in body["details"]], body
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "SELECT ", "sqlite3", ".py\""):
        assert leak not in text
    return body


def create_config(client, key, config_id, model_id="gpt-4o", provider="OpenAI", **extra):
    body = {"id": config_id, "displayName": f"Config {config_id}", "modelId": model_id, "provider": provider, **extra}
    response = client.post("/v1/model-configs", json=body, headers=bearer(key))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def post_events(client, key, events):
    response = client.post("/v1/model-usage/events", json={"events": events}, headers=bearer(key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()
