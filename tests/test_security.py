"""Security review: one 401 for every bad key, no caching of tenant data, no keys in URLs,
recognisable keys stored only as hashes, no debug mode in production, no internals in errors."""
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import assert_error, bearer, create_config, post_events
from usage_server import auth, create_app, reports
from usage_server.auth import KEY_PATTERN
from usage_server.storage import connect
from usage_server.storage.connections import engine_of

REPO = Path(__file__).resolve().parent.parent
EVENT = {"id": "e1", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 10,
         "completionTokens": 5, "cost": 0.5}


@pytest.fixture
def spec_operations(client):
    spec = client.get("/openapi.json").get_json()
    return [(method.upper(), path.replace("{modelConfigId}", "cfg_a"), op)
            for path, item in spec["paths"].items() for method, op in item.items()]


@pytest.fixture
def secured(spec_operations):
    return [(method, path) for method, path, op in spec_operations if op["security"]]


def bad_keys(runner, make_key):
    revoked = make_key("acme")
    assert runner.invoke(args=["revoke-key", revoked]).exit_code == 0
    well_formed_unknown = f"usk_{'0' * 12}_{'A' * 40}"
    return {
        "missing": {},
        "empty": {"Authorization": "Bearer "},
        "malformed": {"Authorization": "Bearer not a key at all"},
        "other scheme": {"Authorization": "Basic dXNrXzA6MA=="},
        "unknown": bearer(well_formed_unknown),
        "revoked": bearer(revoked),
        "revoked, bare": {"Authorization": revoked},
        "wrong prefix": bearer("sk_" + revoked[4:]),
        "uppercase prefix": bearer("USK_" + revoked[4:]),
        "huge": bearer("usk_" + "a" * 1_000_000),
        "near gunicorn's header limit": bearer(revoked + "a" * 8000),
    }


def test_every_bad_key_gets_one_identical_401_on_every_secured_operation(client, runner, make_key, secured):
    make_key("acme")  # a live key exists, so "unknown" is not just an empty table
    reference = client.get("/v1/model-usage")
    expected_body = reference.get_data()
    assert reference.status_code == 401
    assert json.loads(expected_body) == {"error": "a valid API key is required", "code": "unauthorized"}
    assert reference.headers["WWW-Authenticate"] == 'Bearer realm="usage_server"'
    for kind, headers in bad_keys(runner, make_key).items():
        for method, path in secured:
            response = client.open(path, method=method, headers=headers, json={"events": [EVENT]})
            assert (response.status_code, response.get_data()) == (401, expected_body), (kind, method, path)
            assert response.headers["WWW-Authenticate"] == reference.headers["WWW-Authenticate"]
            assert response.headers["Cache-Control"] == "no-store"


def test_tenant_data_and_every_error_are_never_cached(client, make_key, frozen_now):
    key, reader = make_key("acme"), make_key("acme", ("read",))
    create_config(client, key, "cfg_a")
    post_events(client, key, [EVENT])
    etag = client.get("/v1/model-usage", headers=bearer(key)).headers["ETag"]
    requests = [
        ("GET", "/v1/model-usage", bearer(key), None, 200),
        ("GET", "/v1/model-usage", {**bearer(key), "Accept": "text/csv"}, None, 200),
        ("GET", "/v1/model-usage", {**bearer(key), "If-None-Match": etag}, None, 304),
        ("GET", "/v1/model-usage/cfg_a", bearer(key), None, 200),
        ("GET", "/v1/model-usage/cfg_a", {**bearer(key), "Accept": "text/csv"}, None, 200),
        ("GET", "/v1/model-configs", bearer(key), None, 200),
        ("GET", "/v1/model-configs/usage", bearer(key), None, 200),
        ("POST", "/v1/model-configs", bearer(key), {"id": "cfg_b", "modelId": "gpt-4o", "provider": "OpenAI"}, 201),
        ("POST", "/v1/model-usage/events", bearer(key), {"events": [EVENT]}, 200),
        ("GET", "/v1/model-usage?period=nonsense", bearer(key), None, 400),
        ("GET", "/v1/model-usage", {}, None, 401),
        ("POST", "/v1/model-usage/events", bearer(reader), {"events": [EVENT]}, 403),
        ("GET", "/v1/model-usage/cfg_nope", bearer(key), None, 404),
        ("GET", "/no/such/route", bearer(key), None, 404),
        ("DELETE", "/v1/model-configs", bearer(key), None, 405),
        ("POST", "/v1/model-configs", bearer(key), {"id": "cfg_a", "modelId": "gpt-4o", "provider": "OpenAI"}, 409),
        ("GET", "/v1/model-usage?api_key=x", {}, None, 400),
    ]
    for method, url, headers, body, status in requests:
        response = client.open(url, method=method, headers=headers, json=body)
        assert response.status_code == status, (method, url, response.get_data(as_text=True))
        assert response.headers["Cache-Control"] == "no-store", (method, url)
    big = client.post("/v1/model-usage/events", headers={**bearer(key), "Content-Type": "application/json"},
                      data=b"x" * (2 * 1024 * 1024 + 1))
    assert big.status_code == 413 and big.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("parameter", ["api_key", "key", "token", "access_token", "API_KEY", "apiKey"])
def test_a_key_in_the_url_never_authenticates_and_is_refused(client, make_key, parameter, spec_operations):
    key = make_key("acme")
    for method, path, _ in spec_operations:
        for headers in ({}, bearer(key)):  # alone, or beside a valid header: refused either way
            response = client.open(f"{path}?{parameter}={key}", method=method, headers=headers, json={})
            body = assert_error(response, 400, "invalid_request", parameter)
            assert body["details"][0]["code"] == "CREDENTIALS_IN_URL"
            assert key not in response.get_data(as_text=True)


def test_a_key_shaped_value_under_any_name_is_refused(client, make_key):
    key = make_key("acme")
    response = client.get(f"/v1/model-usage?period={key}", headers=bearer(key))
    assert_error(response, 400, "invalid_request", "period")
    assert response.get_json()["details"][0]["code"] == "CREDENTIALS_IN_URL"


def test_keys_have_a_prefixed_format_that_scanners_can_find(runner, app):
    result = runner.invoke(args=["create-key", "acme", "--scopes", "read"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert KEY_PATTERN.fullmatch(key)
    documented = re.search(r"```\n(.+)\n```", (REPO / "docs" / "security.md").read_text()).group(1)
    assert documented == r"\b" + KEY_PATTERN.pattern + r"(?![A-Za-z0-9_-])"
    leaked = f'config = {{"token": "{key}"}}\nexport USAGE_KEY={key}\n'
    assert re.findall(documented, leaked) == [key, key]


def test_the_raw_key_is_never_stored_only_its_hash(app, runner):
    result = runner.invoke(args=["create-key", "acme"])
    key = result.output.strip().splitlines()[-1]
    assert KEY_PATTERN.fullmatch(key)
    secret = key[len("usk_") + 12 + 1:]  # the 40 characters after usk_<12 hex id>_ (they may hold "_")
    assert len(secret) == 40
    listed = runner.invoke(args=["list-keys"])
    assert listed.exit_code == 0 and secret not in listed.output
    conn = connect(app.config)
    tables = engine_of(conn).table_names(conn)
    values = [str(value) for table in tables for row in conn.execute(f'SELECT * FROM "{table}"') for value in row]
    conn.close()
    assert auth.hash_key(key) in values
    assert not any(secret in value for value in values)


@pytest.mark.sqlite_only
def test_the_raw_key_is_in_no_byte_of_the_database_files(app, runner):
    key = runner.invoke(args=["create-key", "acme"]).output.strip().splitlines()[-1]
    secret = key[len("usk_") + 12 + 1:]
    conn = connect(app.config)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    files = list(Path(app.config["DATABASE"]).parent.glob("usage.sqlite*"))  # the file, its WAL and journal
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


SCHEMA_FILES = """
SELECT pg_relation_filepath(c.oid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND pg_relation_filepath(c.oid) IS NOT NULL
"""
WAL_FILE = "SELECT pg_walfile_name(pg_current_wal_insert_lsn()), pg_current_wal_insert_lsn()"


def test_the_raw_key_is_in_no_byte_of_the_postgresql_servers_files(postgres):
    """PostgreSQL's counterpart: the write-ahead log written meanwhile, the files of the
    schema's tables and indexes, and the server's log."""
    if postgres.folder is None:
        pytest.skip("the server of USAGE_SERVER_TEST_POSTGRES: its files are not on this machine")
    database = postgres.new_schema()
    with psycopg.connect(database, autocommit=True) as conn:
        first_wal, _ = conn.execute(WAL_FILE).fetchone()
        result = create_app({"TESTING": True, "DATABASE": database}).test_cli_runner().invoke(args=["create-key", "acme"])
        assert result.exit_code == 0, result.output
        last_wal, written = conn.execute(WAL_FILE).fetchone()
        conn.execute("SET synchronous_commit = on")  # the test cluster's is off: its log reaches the files later
        conn.execute("CREATE TEMP TABLE wal_written ()")  # a commit that logs, so it waits for the log to be written
        assert conn.execute("SELECT pg_current_wal_flush_lsn() >= %s", (written,)).fetchone()[0]
        wal = [path.read_bytes() for path in sorted((postgres.data / "pg_wal").iterdir())  # before a checkpoint recycles it
               if first_wal <= path.name <= last_wal]
        postgres.admin("CHECKPOINT")  # every page written to its file
        tables = [(postgres.data / path).read_bytes() for path, in conn.execute(SCHEMA_FILES)]
    key = result.output.strip().splitlines()[-1]
    secret, hashed = key[len("usk_") + 12 + 1:].encode(), auth.hash_key(key).encode()
    assert any(hashed in data for data in wal) and any(hashed in data for data in tables)  # the key's row was read
    for data in [*wal, *tables, (postgres.folder / "server.log").read_bytes()]:
        assert secret not in data


@pytest.mark.parametrize("environment", [{"FLASK_DEBUG": "1"}, {"USAGE_SERVER_DEBUG": "true"},
                                         {"USAGE_SERVER_PROPAGATE_EXCEPTIONS": "true"}])
def test_the_production_entry_point_never_runs_in_debug_mode(database, environment):
    """gunicorn serves wsgi:app; whatever the environment, it answers failures as JSON."""
    program = (
        "import wsgi\n"
        "from usage_server import reports\n"
        "def fail(*args): raise RuntimeError('boom')\n"
        "reports.model_usage = fail\n"
        "from usage_server.auth import create_key\n"
        "from usage_server.storage import connect, write_transaction\n"
        "conn = connect(wsgi.app.config)\n"
        "with write_transaction(conn): key = create_key(conn, 'acme', ['read'])[1]\n"
        "response = wsgi.app.test_client().get('/v1/model-usage', headers={'Authorization': 'Bearer ' + key})\n"
        "print(wsgi.app.debug, wsgi.app.config['PROPAGATE_EXCEPTIONS'], response.status_code, response.get_data(as_text=True))\n"
    )
    env = {**os.environ, **environment, "USAGE_SERVER_DATABASE": database}
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    debug, propagate, status, body = result.stdout.strip().split(" ", 3)
    assert (debug, propagate, status) == ("False", "False", "500")
    assert json.loads(body) == {"error": "the server failed to answer this request", "code": "internal_error"}


FAILURES = [  # (what is raised, the status it is answered with): the database's own troubles are 503
    (RuntimeError('SELECT secret FROM api_key WHERE path = "/srv/usage/instance/usage.sqlite"'), 500),
    (sqlite3.OperationalError("no such table: usage_event (/srv/usage/instance/usage.sqlite)"), 503),
    (sqlite3.DatabaseError("file is not a database: /srv/usage/instance/usage.sqlite"), 503),
    (sqlite3.IntegrityError("UNIQUE constraint failed: model_config.owner_id, model_config.id"), 500),
    (psycopg.OperationalError('connection to server at "db.internal" failed: postgresql://usage:s3cret@db.internal/usage'),
     503),
    (psycopg.errors.UndefinedTable('relation "usage_event" does not exist'), 503),
    (psycopg.errors.UniqueViolation('duplicate key value violates unique constraint "model_config_pkey"'), 500),
    (KeyError("display_name"), 500),
    (RecursionError("maximum recursion depth exceeded"), 500),
]
CODES = {500: "internal_error", 503: "service_unavailable"}


@pytest.mark.parametrize("failure, status", FAILURES,
                         ids=[f"{type(failure).__module__.split('.')[0]}.{type(failure).__name__}" for failure, _ in FAILURES])
def test_no_error_body_shows_a_traceback_sql_or_a_path(client, make_key, monkeypatch, failure, status):
    def fail(*args, **kwargs):
        raise failure

    key = make_key("acme")
    monkeypatch.setattr(reports, "model_usage", fail)
    response = client.get("/v1/model-usage", headers=bearer(key))
    body = assert_error(response, status, CODES[status])
    assert set(body) == {"error", "code"}
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "SELECT", "api_key", "usage_event", "model_config", "/srv/", "sqlite3", "display_name",
                 "recursion", 'File "', "psycopg", "postgresql://", "s3cret", "db.internal", "constraint"):
        assert leak not in text, (leak, text)
    assert response.headers["Cache-Control"] == "no-store"


def test_errors_for_hostile_input_show_no_internals(client, make_key):
    key = make_key("acme")
    hostile = [  # (method, url, body, the detail that names the problem: path and code)
        ("POST", "/v1/model-usage/events", b'{"events": [' * 100_000, ("", "INVALID_JSON")),
        ("POST", "/v1/model-usage/events", b"\xff\xfe not utf-8", ("", "INVALID_JSON")),
        ("POST", "/v1/model-configs", json.dumps({"modelId": "x", "provider": "y", "settings": {"a": 1e400}}).encode(),
         ("", "INVALID_JSON")),  # json.dumps writes the overflow as Infinity
        ("GET", "/v1/model-usage?startDate=2024-01-01%27%3B%20DROP%20TABLE%20usage_event%3B--", None,
         ("startDate", "INVALID_DATE")),
        ("GET", "/v1/model-usage/..%2F..%2Fetc%2Fpasswd", None, ("modelConfigId", "INVALID_ID")),
        ("GET", "/v1/model-usage?timezone=..%2F..%2F..%2Fetc%2Fpasswd", None, ("timezone", "UNKNOWN_TIMEZONE")),
    ]
    for method, url, data, (path, code) in hostile:
        response = client.open(url, method=method, data=data, headers={**bearer(key), "Content-Type": "application/json"})
        body = assert_error(response, 400, "invalid_request", path)
        assert code in [item["code"] for item in body["details"] if item["path"] == path], (url, body)
        text = response.get_data(as_text=True)
        for leak in ("Traceback", "sqlite", 'File "', "SELECT"):
            assert leak not in text, (url, text)
    assert client.get("/v1/model-configs", headers=bearer(key)).status_code == 200  # and it still answers
