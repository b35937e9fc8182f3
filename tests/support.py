"""Helpers shared by the reliability tests: catalogue prices, keys on a bare database, and
the rollups checked against the events summed again, on either engine."""
import itertools
import json
from contextlib import closing
from decimal import Decimal
from pathlib import Path

from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction
from usage_server.storage.connections import engine_of

PRICES_FILE = Path(__file__).resolve().parent.parent / "usage_server" / "prices.json"


def catalogue_prices() -> dict:
    """model id -> (prompt, completion) USD per million tokens as strings, for the oracle."""
    models = json.loads(PRICES_FILE.read_text(), parse_float=Decimal)["models"]
    return {
        model["modelId"]: (str(model["promptPerMillion"]), str(model["completionPerMillion"]))
        for model in models
        if model.get("promptPerMillion") is not None and model.get("completionPerMillion") is not None
    }


def prepare_database(database, owners=("acme",), **config) -> dict:
    """Create the schema of `database` (a path or a URL) and one read/write key per owner:
    owner -> raw key."""
    app = create_app({"DATABASE": str(database), **config})
    conn = connect(app.config)
    keys = {}
    with write_transaction(conn):
        for owner in owners:
            keys[owner] = create_key(conn, owner, ["read", "write"])[1]
    conn.close()
    return keys


def catalogue_names() -> dict:
    """model id -> display name in the catalogue (a config's default modelName)."""
    return {model["modelId"]: model["displayName"] for model in json.loads(PRICES_FILE.read_text())["models"]}


def open_database(database):
    """A connection (closed on leaving the `with`) to look at what a server stored: the
    defaults' settings, and none of the server's start-up work."""
    return closing(connect(create_app({"DATABASE": str(database)}, prepare_database=False).config))


def rows(conn, statement: str, params=()) -> list[tuple]:
    """A query's rows as plain tuples (comparable whatever the engine's row type)."""
    return [tuple(row) for row in conn.execute(statement, params)]


# table -> (slot length, seconds from a slot start to the epoch's slot grid): weeks start
# on Mondays, and 1970-01-01 was a Thursday
ROLLUPS = {"rollup_week": (604_800, 3 * 86_400), "rollup_day": (86_400, 0), "rollup_hour": (3_600, 0),
           "rollup_quarter": (900, 0)}
LOCAL_ROLLUPS = {"rollup_local_day": ROLLUPS["rollup_day"], "rollup_local_week": ROLLUPS["rollup_week"],
                 "rollup_local_hour": ROLLUPS["rollup_hour"]}
SUMS = ("requests, unpriced, platform_tokens, user_tokens, platform_cost, user_cost, prompt_tokens, "
        "cached_prompt_tokens, reasoning_tokens")
REBUILT = """
SELECT owner_id, ts_us / 1000000 - (ts_us / 1000000 + :phase) % :grain AS slot, series_id, COUNT(*), SUM(1 - priced),
       SUM(CASE WHEN billing_source = 'platform' THEN total_tokens ELSE 0 END),
       SUM(CASE WHEN billing_source = 'user' THEN total_tokens ELSE 0 END),
       SUM(CASE WHEN billing_source = 'platform' THEN cost_micros ELSE 0 END),
       SUM(CASE WHEN billing_source = 'user' THEN cost_micros ELSE 0 END),
       SUM(prompt_tokens), SUM(cached_prompt_tokens), SUM(reasoning_tokens)
FROM usage_event
GROUP BY owner_id, slot, series_id
ORDER BY owner_id, slot, series_id
"""
# Local slots at an offset, as slots of the instants shifted by it (slots come out shifted too).
REBUILT_LOCAL = REBUILT.replace("ts_us / 1000000", "(ts_us / 1000000 + :offset)")


def assert_rollups_equal_a_rebuild(conn) -> list[int]:
    """Every rollup table equals the events summed again in plain SQL (not the server's own
    rebuild); returns the local offsets registered, which the caller checks."""
    tables = {name for name in engine_of(conn).table_names(conn) if name.startswith("rollup")}
    assert tables == {*ROLLUPS, *LOCAL_ROLLUPS, "rollup_offset"}  # a new rollup table must be checked too
    for table, (grain, phase) in ROLLUPS.items():
        stored = rows(conn, f"SELECT owner_id, slot_start, series_id, {SUMS} FROM {table} "
                            "ORDER BY owner_id, slot_start, series_id")
        assert stored == rows(conn, REBUILT, {"grain": grain, "phase": phase}), table
    offsets = [offset for offset, in rows(conn, "SELECT utc_offset FROM rollup_offset ORDER BY 1")]
    for (table, (grain, phase)), offset in itertools.product(LOCAL_ROLLUPS.items(), offsets):
        stored = rows(conn, f"SELECT owner_id, slot_start + :offset, series_id, {SUMS} FROM {table} "
                            "WHERE utc_offset = :offset ORDER BY owner_id, slot_start, series_id", {"offset": offset})
        rebuilt = rows(conn, REBUILT_LOCAL, {"grain": grain, "phase": phase, "offset": offset})
        if table == "rollup_local_hour" and offset % 3_600 == 0:
            rebuilt = []  # whole-hour offsets: rollup_hour holds their local hours
        assert stored == rebuilt, (table, offset)
    return offsets
