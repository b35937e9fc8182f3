"""PostgreSQL stores many rows by COPY into a staging table and one INSERT from it
(storage/postgresql.py, bulk_form): the same rows, order and upserts as a statement per row."""
import psycopg
import pytest

from conftest import bearer, create_config, post_events
from usage_server import create_app, queries
from usage_server.auth import create_key
from usage_server.storage import connect, postgresql, write_transaction

OWNER = 1


@pytest.fixture
def pg_app(postgres):
    return create_app({"TESTING": True, "DATABASE": postgres.new_schema(), "BUSY_TIMEOUT_MS": 200})


@pytest.fixture
def conn(pg_app):
    conn = connect(pg_app.config)
    with write_transaction(conn):
        conn.execute(queries.INSERT_OWNER, {"name": "acme", "created_at": "2026-03-18T00:00:00Z"})
        conn.execute(queries.INSERT_SERIES, {"owner_id": OWNER, "config_id": "cfg", "model_id": "gpt-4o",
                                             "provider": "OpenAI", "model_name": "GPT-4o"})
    yield conn
    conn.close()


def event_row(event_id: str, series_id: int, ts_us: int = 1_773_800_000_000_000) -> tuple:
    return (OWNER, event_id, ts_us, series_id, 10, 5, 15, 100, 1, None, "platform", 7, 1, 4, 3, 2)


def rollup_row(slot: int, series_id: int, requests: int) -> tuple:
    return (OWNER, slot, series_id, requests, 0, 10 * requests, 0, 100 * requests, 0, 8 * requests, 4 * requests, requests)


def rollups(conn) -> dict:
    rows = conn.execute("SELECT slot_start, requests, platform_tokens, platform_cost, prompt_tokens, cached_prompt_tokens, "
                        "reasoning_tokens FROM rollup_hour ORDER BY slot_start")
    return {row[0]: tuple(row[1:]) for row in rows}


def test_only_inserts_of_plain_values_take_the_bulk_form():
    assert postgresql.bulk_form(queries.INSERT_EVENT) is not None
    assert postgresql.bulk_form(queries.UPSERT_ROLLUP[3_600]) is not None
    assert postgresql.bulk_form(queries.UPSERT_MODEL) is None  # named parameters
    assert postgresql.bulk_form("INSERT INTO owner (name, created_at) VALUES (?, ?, ?)") is None  # 2 columns, 3 values
    assert postgresql.bulk_form("UPDATE owner SET name = ? WHERE id = ?") is None


def test_rows_are_inserted_in_the_order_given(conn):
    series_id = conn.execute("SELECT id FROM usage_series").fetchone()[0]
    given = ["e-5", "e-1", "e-9", "e-3", "e-7", "e-2"]  # neither sorted nor reverse-sorted
    with write_transaction(conn):
        conn.executemany(queries.INSERT_EVENT, [event_row(event_id, series_id) for event_id in given])
    assert [tuple(row) for row in conn.execute("SELECT event_id, cached_prompt_tokens, cache_write_tokens, "
                                               "reasoning_tokens FROM usage_event ORDER BY id")] == \
        [(event_id, 4, 3, 2) for event_id in given]


def test_rows_through_the_staging_table_keep_the_order_given(conn):
    """copy-to's key rows (INSERT ... ON CONFLICT) get their creation order (rowid) as given."""
    given = ["k5", "k1", "k9", "k3"]
    rows = [(key_id, OWNER, "", f"hash-{key_id}", "read", "2026-03-18T00:00:00Z", None) for key_id in given]
    with write_transaction(conn):
        conn.executemany(queries.COPY_ROWS["api_key"], rows)
    assert postgresql.bulk_form(queries.COPY_ROWS["api_key"]).create is not None
    assert [row[0] for row in conn.execute("SELECT id FROM api_key ORDER BY rowid")] == given


def test_upserts_add_to_existing_rows_and_calls_in_one_transaction_do_not_see_each_other_twice(conn):
    series_id = conn.execute("SELECT id FROM usage_series").fetchone()[0]
    with write_transaction(conn):
        conn.executemany(queries.UPSERT_ROLLUP[3_600], [rollup_row(0, series_id, 1), rollup_row(3_600, series_id, 2)])
        conn.executemany(queries.UPSERT_ROLLUP[3_600], [rollup_row(3_600, series_id, 3), rollup_row(7_200, series_id, 4)])
    with write_transaction(conn):
        conn.executemany(queries.UPSERT_ROLLUP[3_600], [rollup_row(0, series_id, 5)])
    assert rollups(conn) == {0: (6, 60, 600, 48, 24, 6), 3_600: (5, 50, 500, 40, 20, 5), 7_200: (4, 40, 400, 32, 16, 4)}


def test_rows_of_a_rolled_back_transaction_are_not_stored_later(conn):
    series_id = conn.execute("SELECT id FROM usage_series").fetchone()[0]
    with pytest.raises(ZeroDivisionError):
        with write_transaction(conn):
            conn.executemany(queries.UPSERT_ROLLUP[3_600], [rollup_row(0, series_id, 1)])
            1 / 0
    with write_transaction(conn):
        conn.executemany(queries.UPSERT_ROLLUP[3_600], [rollup_row(3_600, series_id, 2)])
    assert rollups(conn) == {3_600: (2, 20, 200, 16, 8, 2)}


def test_a_batch_is_stored_without_a_statement_per_row(pg_app, monkeypatch):
    """POST /v1/model-usage/events stores its events and rollups without psycopg's executemany."""
    def refuse(*args, **kwargs):
        raise AssertionError("a statement per row")

    conn = connect(pg_app.config)
    with write_transaction(conn):
        key = create_key(conn, "acme", ["read", "write"])[1]
    conn.close()
    client = pg_app.test_client()
    create_config(client, key, "cfg_a")
    monkeypatch.setattr(psycopg.Cursor, "executemany", refuse)
    events = [{"id": f"e{n}", "timestamp": f"2026-03-1{n % 8}T0{n % 10}:15:00Z", "modelConfigId": "cfg_a",
               "promptTokens": 10 + n, "completionTokens": 5, "cost": 0.25, "cachedPromptTokens": n % 7,
               "reasoningTokens": n % 2} for n in range(40)]
    assert post_events(client, key, events)["accepted"] == 40
    response = client.get("/v1/model-usage?startDate=2026-03-10&endDate=2026-03-17", headers=bearer(key))
    tokens = sum(15 + n for n in range(40))
    assert response.get_json()["summary"] == {
        "totalCost": 10.0, "totalRequests": 40, "totalTokens": tokens, "platformCost": 10.0,
        "platformTokens": tokens, "userCost": 0.0, "userTokens": 0, "cachedPromptTokens": sum(n % 7 for n in range(40)),
        "reasoningTokens": 20, "promptTokens": sum(10 + n for n in range(40))}
