"""What a small PostgreSQL request costs besides its queries (storage/postgresql.py): its
deadline is set in one round trip, the pool's check of the connection it hands out (each round
trip is a large part of a small request), and whole sums are read without Decimal. The
deadline is still in effect, a broken connection is still replaced, fractions stay exact."""
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.numeric import NumericLoader

from conftest import bearer
from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, get_db, postgresql, write_transaction

LIMIT_MS = 4321


@pytest.fixture
def pg_app(postgres):
    return create_app({"TESTING": True, "DATABASE": postgres.new_schema(), "QUERY_TIME_LIMIT_MS": LIMIT_MS})


@pytest.fixture
def key(pg_app):
    conn = connect(pg_app.config)
    with write_transaction(conn):
        raw = create_key(conn, "acme", ["read"])[1]
    conn.close()
    return raw


def test_each_request_sets_its_deadline_in_one_statement(pg_app, key, monkeypatch):
    sent = []
    execute = psycopg.Connection.execute

    def spy(self, query, params=None, **kwargs):
        sent.append(str(query))
        return execute(self, query, params, **kwargs)

    client = pg_app.test_client()
    assert client.get("/v1/model-configs", headers=bearer(key)).status_code == 200  # the pool opens
    monkeypatch.setattr(psycopg.Connection, "execute", spy)
    for _ in range(3):
        assert client.get("/v1/model-configs", headers=bearer(key)).status_code == 200
    assert [query for query in sent if "statement_timeout" in query] == [sent[0]] * 3  # no reset after a request
    assert sent[0] == "SELECT set_config('statement_timeout', %s, false)"


def test_a_request_runs_under_its_deadline(pg_app):
    with pg_app.test_request_context("/"):
        assert get_db().execute("SELECT current_setting('statement_timeout')").fetchone()[0] == f"{LIMIT_MS}ms"


def test_a_connection_broken_in_the_pool_is_replaced(pg_app, key, postgres):
    with pg_app.test_request_context("/"):
        pid = get_db().raw.info.backend_pid  # back in the pool at the end of the request
    postgres.admin(f"SELECT pg_terminate_backend({int(pid)})")
    with pg_app.test_request_context("/"):
        assert get_db().raw.info.backend_pid != pid
    assert pg_app.test_client().get("/v1/model-configs", headers=bearer(key)).status_code == 200


def test_whole_sums_are_read_as_int_without_decimal(monkeypatch):
    loader = postgresql.ExactNumericLoader(1700, None)  # numeric's type oid
    assert loader.load(b"7.50") == Decimal("7.50") and loader.load(b"7.00") == 7
    monkeypatch.setattr(NumericLoader, "load", lambda self, data: pytest.fail("read through Decimal"))
    assert [loader.load(b"123456789012"), loader.load(memoryview(b"-42"))] == [123456789012, -42]
