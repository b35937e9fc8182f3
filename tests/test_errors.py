"""Every failure is the contract's JSON error: unknown routes, wrong methods, crashes, a locked database."""
import sqlite3
import time
from contextlib import ExitStack, closing, contextmanager

import psycopg
import pytest

from conftest import assert_error, bearer, create_config, post_events
from usage_server import reports
from usage_server.storage import connect, write_transaction

EVENT = {"id": "e1", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 10,
         "completionTokens": 5, "cost": 0.5}
SECRET_TEXT = "SELECT secret FROM usage_event WHERE 1 -- /srv/usage_server/reports.py line 42"


def assert_plain_error(response, status, code):
    """The contract's shape with no details, and nothing of the server's inside."""
    body = assert_error(response, status, code)
    assert set(body) == {"error", "code"}
    text = response.get_data(as_text=True)
    for leak in ("secret", "/srv", "reports.py", "usage_event", "line 42", "File \"", "locked"):
        assert leak not in text
    return body


@pytest.fixture
def key(make_key):
    return make_key("acme")


@pytest.mark.parametrize("method, url", [("GET", "/nope"), ("GET", "/v1"), ("GET", "/v1/model-usage/"),
                                         ("POST", "/v1/nope"), ("DELETE", "/v2/model-usage"),
                                         ("GET", "/v1/model-configs/cfg_a")])
def test_unknown_routes_are_json_404(client, method, url):
    assert_plain_error(client.open(url, method=method), 404, "not_found")


@pytest.mark.parametrize(
    "method, url, allowed",
    [
        ("POST", "/v1/model-usage", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/v1/model-usage", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/v1/model-configs", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("PATCH", "/v1/model-configs/usage", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/v1/model-usage/events", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("POST", "/health", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_wrong_methods_are_json_405_with_allow(client, key, method, url, allowed):
    response = client.open(url, method=method, headers=bearer(key))
    assert_plain_error(response, 405, "method_not_allowed")
    assert {item.strip() for item in response.headers["Allow"].split(",")} == allowed


def test_oversized_body_is_json_413(client, key):
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    response = client.post("/v1/model-usage/events", data=body, headers=bearer(key),
                           content_type="application/json")
    assert_plain_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "failure",
    [RuntimeError(SECRET_TEXT), KeyError(SECRET_TEXT), ZeroDivisionError(SECRET_TEXT),
     sqlite3.IntegrityError(SECRET_TEXT), sqlite3.ProgrammingError(SECRET_TEXT),
     psycopg.errors.UniqueViolation(SECRET_TEXT), psycopg.ProgrammingError(SECRET_TEXT)],
    ids=lambda failure: f"{type(failure).__module__.split('.')[0]}.{type(failure).__name__}",
)
def test_unexpected_failure_is_a_bare_500(client, key, monkeypatch, caplog, failure):
    def explode(*args, **kwargs):
        raise failure

    monkeypatch.setattr(reports, "model_usage", explode)
    response = client.get("/v1/model-usage", headers=bearer(key))
    assert_plain_error(response, 500, "internal_error")
    assert "SELECT secret" in caplog.text  # kept for the operator, in the log only


# --- a database locked by another connection -------------------------------------------------------


@pytest.fixture
def seeded(app, client, key, frozen_now):
    create_config(client, key, "cfg_a")
    post_events(client, key, [EVENT])
    return client.get("/v1/model-usage?period=today", headers=bearer(key)).get_json()


class Abandoned(Exception):
    """Leaves a write transaction without committing it."""


@contextmanager
def uncommitted_write(conn):
    """The storage layer's write transaction (so the write lock), rolled back on leaving."""
    try:
        with write_transaction(conn):
            yield conn
            raise Abandoned
    except Abandoned:
        pass


@pytest.fixture
def writer_lock(app, seeded):
    """Another connection holding the write lock, with uncommitted changes; call it to roll
    them back and let the lock go (teardown does, if the test did not)."""
    held = ExitStack()
    other = held.enter_context(closing(connect(app.config)))
    held.enter_context(uncommitted_write(other))
    other.execute("DELETE FROM rollup_day")
    other.execute("UPDATE api_key SET revoked_at = '2026-01-01T00:00:00Z'")
    yield held.close
    held.close()


@pytest.mark.parametrize(
    "url, body, stored",
    [("/v1/model-usage/events", {"events": [dict(EVENT, id="e2")]}, 200),
     ("/v1/model-configs", {"id": "cfg_b", "modelId": "gpt-4o", "provider": "OpenAI"}, 201)],
)
def test_write_under_a_held_lock_is_a_quick_503(app, client, key, writer_lock, url, body, stored):
    """The lock is held by this thread, so it cannot be let go while the request runs: an
    answer at all shows the writer gave up after its busy timeout instead of waiting."""
    started = time.monotonic()
    response = client.post(url, json=body, headers=bearer(key))
    elapsed = time.monotonic() - started
    assert_plain_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == str(app.config["RETRY_AFTER_SECONDS"])
    assert elapsed >= app.config["BUSY_TIMEOUT_MS"] / 1000 * 0.5  # it did wait for the lock a while
    writer_lock()
    retry = client.post(url, json=body, headers=bearer(key))
    assert retry.status_code == stored, retry.get_json()
    if "events" in body:
        assert retry.get_json() == {"accepted": 1, "duplicates": 0, "conflicts": 0}  # the 503 stored nothing


def test_reads_are_served_under_a_write_lock_and_see_only_committed_data(client, key, seeded, writer_lock):
    """Readers never wait for a writer (SQLite's WAL, PostgreSQL's snapshots), and never see
    its uncommitted changes. The lock is held by this thread for the whole read: a reader
    that waited would get a 503."""
    response = client.get("/v1/model-usage?period=today", headers=bearer(key))
    assert response.status_code == 200
    assert response.get_json() == seeded
    assert seeded["summary"]["totalRequests"] == 1
    assert client.get("/v1/model-usage/cfg_a", headers=bearer(key)).status_code == 200


@pytest.fixture
def exclusive_connection(app, key):
    """A connection in exclusive locking mode after a write: nobody else may even read.

    Taken before the app's first request: an app connection kept open would prevent it.
    """
    other = sqlite3.connect(app.config["DATABASE"], isolation_level=None)
    other.execute("PRAGMA locking_mode = EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("DELETE FROM rollup_day")
    other.execute("COMMIT")
    yield other
    other.close()


# SQLite's locking mode; on PostgreSQL a lock nobody lets go of ends at the busy timeout
# (writes) or the query time limit (reads): tests/test_postgres_faults.py.
@pytest.mark.sqlite_only
@pytest.mark.parametrize("method, url", [("GET", "/v1/model-usage"), ("GET", "/health"),
                                         ("POST", "/v1/model-usage/events")])
def test_an_unreadable_database_is_a_quick_503_not_a_hang(app, client, key, exclusive_connection, method, url):
    """The exclusive lock is this thread's: an answer at all shows the server gave up after its busy timeout."""
    started = time.monotonic()
    response = client.open(url, method=method, headers=bearer(key), json={"events": [dict(EVENT, id="e3")]})
    assert time.monotonic() - started >= app.config["BUSY_TIMEOUT_MS"] / 1000 * 0.5  # it did wait a while
    assert_plain_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == str(app.config["RETRY_AFTER_SECONDS"])
