"""What a test database holds, whatever its engine: rows read through the storage layer
as plain tuples, sorted in Python (so no answer leans on an engine's collation)."""
from oracle import LOCAL_TABLES, OWNER_TABLES
from usage_server.storage import connect

EVENT_ROWS = ("SELECT owner_id, ts_us, series_id, total_tokens, cost_micros, priced, billing_source, prompt_tokens, "
              "cached_prompt_tokens, reasoning_tokens FROM usage_event")
TOTALS = ("requests, unpriced, platform_tokens, user_tokens, platform_cost, user_cost, prompt_tokens, "
          "cached_prompt_tokens, reasoning_tokens")


def inspection_config(database: str) -> dict:
    """Enough of the server's settings for `connect` (no app: starting one would write)."""
    return {"DATABASE": database, "BUSY_TIMEOUT_MS": 5000, "SYNCHRONOUS": "FULL"}


def rows(database: str, statement: str) -> list[tuple]:
    conn = connect(inspection_config(database))
    try:
        return sorted(tuple(row) for row in conn.execute(statement).fetchall())
    finally:
        conn.close()


def run(database: str, *statements: str) -> None:
    """Each statement committed on its own (plain SQL, valid on every engine)."""
    conn = connect(inspection_config(database))
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def local_rollups(database: str) -> dict[str, list[tuple]]:
    """The local rollups (FAST_TIMEZONES) as stored: owner, offset, slot start, series, totals."""
    return {table: rows(database, f"SELECT owner_id, utc_offset, slot_start, series_id, {TOTALS} FROM {table}")
            for table in LOCAL_TABLES}


def owner_rollups(database: str) -> dict[str, list[tuple]]:
    """The owner rollups as stored: owner, slot start, totals."""
    return {table: rows(database, f"SELECT owner_id, slot_start, {TOTALS} FROM {table}") for table in OWNER_TABLES}


def offsets(database: str) -> list[int]:
    """The registered UTC offsets, in seconds."""
    return [row[0] for row in rows(database, "SELECT utc_offset FROM rollup_offset")]
