"""Shared fixtures: an app on a temporary database, clients, keys, a pinned clock."""
from datetime import datetime, timezone

import pytest

from usage_server import api, create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

FROZEN_NOW = datetime(2026, 3, 18, 15, 30, tzinfo=timezone.utc)  # a Wednesday


@pytest.fixture
def app(tmp_path):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "usage.sqlite"), "BUSY_TIMEOUT_MS": 200})
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
