"""Helpers shared by the reliability tests: catalogue prices, keys on a bare database, and
the rollups checked against the events summed again, on either engine."""
import itertools
from contextlib import closing
from datetime import datetime, timezone

from genai_prices.data import providers
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import TieredPrices

from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction
from usage_server.storage.connections import engine_of

# The models the tests price, as (model id, provider); their list prices come from the
# catalogue package itself, read here without the server's code.
CATALOGUE_MODELS = (
    ("gpt-4o", "openai"), ("gpt-4o-mini", "openai"), ("gpt-4.1", "openai"), ("gpt-4.1-mini", "openai"),
    ("o3", "openai"), ("o4-mini", "openai"), ("claude-opus-4-1", "anthropic"), ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-4-5", "anthropic"), ("gemini-2.5-pro", "google"), ("gemini-2.5-flash", "google"),
    ("mistral-large-latest", "mistral"), ("mistral-small-latest", "mistral"), ("gpt-5-nano", "openai"),
)
# The prices in effect on this day. None of these models changed price during 2026 but
# mistral-small-latest (on 2026-03-16): the tests that price it (seeded usage) are of later days.
PRICED_ON = datetime(2026, 11, 1, tzinfo=timezone.utc)


def catalogue_model(model_id: str, provider: str):
    return DataSnapshot(providers=providers, from_auto_update=False).find_provider_model(model_id, None, provider, None)[1]


class CataloguePrice(tuple):
    """(prompt, completion) USD per million tokens as strings, then for a model with a long-context
    tier (threshold, prompt, completion) above it; `special` holds, per tier (base first), the
    rates of cache reads, cache writes and reasoning tokens (None: charged as prompt or
    completion tokens), for the oracle to price token details."""

    special: tuple = ()


def catalogue_prices() -> dict:
    """model id -> CataloguePrice, as the catalogue gives them on PRICED_ON, for the oracle."""
    prices = {}
    for model_id, provider in CATALOGUE_MODELS:
        price = catalogue_model(model_id, provider).get_prices(PRICED_ON)
        prompt, completion = price.input_mtok, price.output_mtok
        specials = [price.cache_read_mtok, price.cache_write_mtok, price.output_reasoning_mtok]

        def base(value):
            return value.base if isinstance(value, TieredPrices) else value

        def above(value):
            return value.tiers[0].price if isinstance(value, TieredPrices) else value

        if isinstance(prompt, TieredPrices):
            (tier,), (long_completion,) = prompt.tiers, completion.tiers
            assert tier.start == long_completion.start
            entry = CataloguePrice((str(prompt.base), str(completion.base), tier.start, str(tier.price),
                                    str(long_completion.price)))
            entry.special = (tuple(base(value) for value in specials), tuple(above(value) for value in specials))
        else:
            entry = CataloguePrice((str(prompt), str(completion)))
            entry.special = (tuple(specials),)
        prices[model_id] = entry
    return prices


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
    """model id -> the catalogue's name (a config's default modelName)."""
    return {model_id: catalogue_model(model_id, provider).name for model_id, provider in CATALOGUE_MODELS}


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
# Owner rollups: the same sums over all of an owner's series.
OWNER_ROLLUPS = {"rollup_owner_week": ROLLUPS["rollup_week"], "rollup_owner_day": ROLLUPS["rollup_day"],
                 "rollup_owner_hour": ROLLUPS["rollup_hour"]}
REBUILT_OWNER = REBUILT.replace(" series_id,", "").replace(", series_id", "")


def assert_rollups_equal_a_rebuild(conn) -> list[int]:
    """Every rollup table equals the events summed again in plain SQL (not the server's own
    rebuild); returns the local offsets registered, which the caller checks."""
    tables = {name for name in engine_of(conn).table_names(conn) if name.startswith("rollup")}
    assert tables == {*ROLLUPS, *LOCAL_ROLLUPS, *OWNER_ROLLUPS, "rollup_offset"}  # a new rollup table must be checked too
    for table, (grain, phase) in OWNER_ROLLUPS.items():
        stored = rows(conn, f"SELECT owner_id, slot_start, {SUMS} FROM {table} ORDER BY owner_id, slot_start")
        assert stored == rows(conn, REBUILT_OWNER, {"grain": grain, "phase": phase}), table
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
