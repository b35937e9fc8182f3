"""Retention: `usage-server prune` and the daily prune delete old raw events in bounded batches,
and no GET /v1/model-usage answer changes (the oracle sums every event ever sent); the details
and rebuild-rollups see only the kept events, and events older than the horizon are refused."""
import random
from datetime import date, datetime, timedelta, timezone

import pytest

from conftest import FROZEN_NOW, assert_error, bearer, create_config, post_events
from oracle import expected_body
from otlp_spans import export, llm
from support import assert_rollups_equal_a_rebuild, catalogue_prices, open_database
from test_otlp import accepted, send
from usage_server import api, create_app, ingest, retention
from usage_server.storage import checkpoint, connect, write_transaction
from usage_server.storage.migrations import LATEST_VERSION

TODAY = FROZEN_NOW.date()  # 2026-03-18
KEEP_DAYS = 30
HORIZON = TODAY - timedelta(days=KEEP_DAYS)  # 2026-02-16
CONFIGS = [("cfg_chat", "gpt-4o", "OpenAI"), ("cfg_summary", "claude-haiku-4-5", "Anthropic"),
           ("cfg_local", "llama-3-70b", "Meta")]
ZONES = ["UTC", "Asia/Kathmandu", "America/New_York", "Pacific/Chatham"]
FIRST_DAY = date(2025, 11, 20)


def build_events(count=400, seed=7) -> list[dict]:
    """Events every few hours from FIRST_DAY to now, some exactly on the horizon's edges."""
    rng = random.Random(seed)
    start = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=timezone.utc)
    span_us = int((FROZEN_NOW - start).total_seconds() * 1_000_000)
    instants = [start + timedelta(microseconds=rng.randrange(span_us)) for _ in range(count)]
    edge = datetime(HORIZON.year, HORIZON.month, HORIZON.day, tzinfo=timezone.utc)
    instants += [edge - timedelta(microseconds=1), edge, edge + timedelta(minutes=14, seconds=59)]
    events = []
    for index, instant in enumerate(instants):
        event = {"id": f"e{index}", "timestamp": instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 "modelConfigId": rng.choice(CONFIGS)[0], "promptTokens": rng.randrange(5000),
                 "completionTokens": rng.randrange(2000), "billingSource": rng.choice(["platform", "user"])}
        if rng.random() < 0.5:
            event["cost"] = rng.randrange(100_000) / 1_000_000
        events.append(event)
    return events


EVENTS = build_events()
OLD = [event for event in EVENTS if event["timestamp"] < HORIZON.isoformat()]


def prices() -> dict:
    return catalogue_prices()  # llama-3-70b is in no catalogue: unpriced


@pytest.fixture
def world(database, make_key, client, app, frozen_now):
    """Every event of EVENTS stored for one owner, on a database of its own (the tests prune it)."""
    key = make_key()
    configs = {config_id: create_config(client, key, config_id, model_id, provider)
               for config_id, model_id, provider in CONFIGS}
    for first in range(0, len(EVENTS), 1000):
        post_events(client, key, EVENTS[first:first + 1000])
    return {"key": key, "configs": configs, "app": app, "client": client, "prices": prices()}


# (startDate, endDate, granularity): whole history by day/week/month, hours on both sides of the horizon
QUERIES = [(FIRST_DAY - timedelta(days=3), TODAY, granularity) for granularity in ("day", "week", "month")]
QUERIES += [(HORIZON - timedelta(days=2), HORIZON + timedelta(days=1), "hour"),
            (date(2025, 12, 30), date(2026, 1, 2), "hour")]


def answers(world, events) -> int:
    """Every query in every zone (and one config alone) equals the oracle's sum of `events`."""
    checked = 0
    for zone in ZONES:
        for start, end, granularity in QUERIES:
            for config_id in (None, "cfg_chat"):
                query = {"startDate": start.isoformat(), "endDate": end.isoformat(), "granularity": granularity,
                         "timezone": zone, **({"modelConfigId": config_id} if config_id else {})}
                response = world["client"].get("/v1/model-usage", query_string=query, headers=bearer(world["key"]))
                assert response.status_code == 200, response.get_json()
                expected = expected_body(events, world["configs"], world["prices"], start, end, granularity, zone,
                                         config_id, data_source=world["app"].config["DATA_SOURCE"])
                assert response.get_json() == expected, (zone, start, end, granularity, config_id)
                checked += 1
        for period, granularity in (("last_30_days", "day"), ("last_month", "week"), ("current_year", "month"),
                                    ("yesterday", "hour")):
            response = world["client"].get("/v1/model-usage", headers=bearer(world["key"]), query_string={
                "period": period, "granularity": granularity, "timezone": zone})
            assert response.status_code == 200, response.get_json()
            meta = response.get_json()["meta"]  # the range "today" (FROZEN_NOW) gives, checked in test_model_usage
            expected = expected_body(events, world["configs"], world["prices"], date.fromisoformat(meta["startDate"]),
                                     date.fromisoformat(meta["endDate"]), granularity, zone, period=period,
                                     data_source=world["app"].config["DATA_SOURCE"])
            assert response.get_json() == expected, (zone, period)
            checked += 1
    return checked


def prune_now(app, keep_days=KEEP_DAYS, today=TODAY, **options):
    conn = connect(app.config)
    try:
        return retention.prune(conn, keep_days, today, **options)
    finally:
        conn.close()


def count_events(app) -> int:
    conn = connect(app.config)
    try:
        return conn.execute("SELECT COUNT(*) FROM usage_event").fetchone()[0]
    finally:
        conn.close()


def test_pruning_deletes_old_events_and_changes_no_usage_answer(world):
    assert OLD and len(OLD) < len(EVENTS)
    before = {period: world["client"].get("/v1/model-usage", query_string={"period": period},
                                          headers=bearer(world["key"])).get_json()
              for period in ("last_30_days", "current_year")}
    assert answers(world, EVENTS)
    pruned = prune_now(world["app"], batch=17)
    assert pruned == retention.Pruned(HORIZON, len(OLD))
    assert count_events(world["app"]) == len(EVENTS) - len(OLD)
    assert answers(world, EVENTS)  # the oracle still sums every event ever sent
    for period, body in before.items():
        assert world["client"].get("/v1/model-usage", query_string={"period": period},
                                   headers=bearer(world["key"])).get_json() == body
    # the details list only kept events
    details = world["client"].get("/v1/model-usage/cfg_chat?limit=1000", headers=bearer(world["key"])).get_json()
    kept = sorted(event["id"] for event in EVENTS if event["modelConfigId"] == "cfg_chat" and event not in OLD)
    assert sorted(item["id"] for item in details["recentUsage"]) == kept


def test_rebuild_rollups_after_a_prune_keeps_the_pruned_usage(world):
    prune_now(world["app"])
    result = world["app"].test_cli_runner().invoke(args=["rebuild-rollups"])
    assert result.exit_code == 0, result.output
    assert f"Events before {HORIZON} (UTC) were pruned" in result.output
    assert answers(world, EVENTS)


def test_an_event_older_than_the_horizon_is_refused_and_a_newer_one_counted_once(world):
    prune_now(world["app"])
    kept = next(event for event in EVENTS if event["timestamp"] >= HORIZON.isoformat())
    new = {**kept, "id": "fresh", "timestamp": f"{HORIZON}T00:00:00Z"}
    for old in (OLD[0], {**OLD[0], "id": "never-seen"}):  # a re-send of a pruned event, or a new old one
        response = world["client"].post("/v1/model-usage/events", json={"events": [new, old]},
                                        headers=bearer(world["key"]))
        body = assert_error(response, 400, "invalid_request", "events.1.timestamp")
        assert f"retention horizon {HORIZON}" in body["error"] and "counted twice" in body["error"]
        assert body["details"][0]["code"] == "BEFORE_RETENTION_HORIZON"
    # nothing of the refused batches was stored; alone, the new event is, and a re-send is a duplicate
    assert post_events(world["client"], world["key"], [new, kept]) == {"accepted": 1, "duplicates": 1, "conflicts": 0}
    assert answers(world, EVENTS + [new])


def test_an_exported_span_older_than_the_horizon_is_rejected_and_the_others_stored(world):
    """An OTLP export cannot be split by its exporter: spans that end before the horizon are
    rejected one by one (partialSuccess), the newer ones of the same export stored."""
    prune_now(world["app"])
    horizon_ns = int(datetime.combine(HORIZON, datetime.min.time(), timezone.utc).timestamp()) * 10**9
    old, new = llm(1, 1, start_ns=horizon_ns - 60 * 10**9), llm(1, 2, start_ns=horizon_ns)  # ends 58.5 s before it; after it
    before = count_events(world["app"])
    for _ in range(2):  # exported again: the old span is rejected again, the new one not counted twice
        answer = accepted(send(world["client"], world["key"], export([old, new])))
        assert answer.partial_success.rejected_spans == 1
        assert f"retention horizon {HORIZON}" in answer.partial_success.error_message
        assert count_events(world["app"]) == before + 1


def test_the_horizon_is_kept_in_the_database_for_every_process(world, database):
    prune_now(world["app"])
    other = create_app({"TESTING": True, "DATABASE": database})  # another worker, or a restart
    response = other.test_client().post("/v1/model-usage/events", json={"events": [OLD[0]]},
                                        headers=bearer(world["key"]))
    assert_error(response, 400, path="events.0.timestamp")
    conn = connect(other.config)
    try:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == LATEST_VERSION
        assert retention.horizon_date(retention.horizon_us(conn)) == HORIZON
    finally:
        conn.close()


def test_prune_works_in_bounded_batches(world, monkeypatch):
    deleted_per_transaction = []

    class Counting:
        """A connection that records the size of every batch deleted."""

        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, params=()):
            cursor = self.conn.execute(sql, params)
            if sql == retention.DELETE_OLD_EVENTS:
                deleted_per_transaction.append(cursor.rowcount)
            return cursor

    monkeypatch.setattr(retention, "write_transaction", lambda db: write_transaction(db.conn))
    monkeypatch.setattr(retention, "checkpoint", lambda db: checkpoint(db.conn))
    conn = connect(world["app"].config)
    try:
        pruned = retention.prune(Counting(conn), KEEP_DAYS, TODAY, batch=10)
    finally:
        conn.close()
    assert pruned.deleted == len(OLD) == sum(deleted_per_transaction)
    assert max(deleted_per_transaction) == 10 and len(deleted_per_transaction) > len(OLD) // 10


def test_the_horizon_never_moves_back_and_the_daily_prune_runs_once_a_day(world):
    assert prune_now(world["app"], keep_days=10).horizon == TODAY - timedelta(days=10)
    assert prune_now(world["app"], keep_days=60).horizon == TODAY - timedelta(days=10)  # the events are gone
    first = prune_now(world["app"], keep_days=5, daily=True)
    assert first.horizon == TODAY - timedelta(days=5)
    assert prune_now(world["app"], keep_days=5, daily=True) is None  # another process did today's
    assert prune_now(world["app"], keep_days=5, today=TODAY + timedelta(days=1), daily=True).horizon == \
        TODAY - timedelta(days=4)
    assert answers(world, EVENTS)


def test_the_server_prunes_daily_by_itself_with_keep_days(world, database, monkeypatch):
    monkeypatch.setattr(retention, "utc_today", lambda: TODAY)
    app = create_app({"TESTING": True, "DATABASE": database, "KEEP_DAYS": KEEP_DAYS})
    daily = app.extensions["usage_server.retention"]
    assert app.test_client().get("/health").status_code == 200  # any request looks whether today's is due
    with daily.lock:  # held by the pruning thread until it is done
        pass
    assert count_events(app) == len(EVENTS) - len(OLD)
    conn = connect(app.config)
    try:
        assert conn.execute("SELECT last_pruned_on FROM retention").fetchone()[0] == TODAY.isoformat()
    finally:
        conn.close()


@pytest.mark.parametrize("value", [-1, "3", 1.5])
def test_a_bad_keep_days_stops_the_server_at_start(database, value):
    with pytest.raises(ValueError, match="KEEP_DAYS"):
        create_app({"TESTING": True, "DATABASE": database, "KEEP_DAYS": value})


def test_prune_command(world):
    result = world["app"].test_cli_runner().invoke(args=["prune", "--keep-days", "3650"])
    assert result.exit_code == 0, result.output
    horizon = datetime.now(timezone.utc).date() - timedelta(days=3650)
    assert result.output == (f"Deleted 0 events before {horizon} (UTC); their usage stays in the totals, "
                             f"and events before {horizon} are refused from now on.\n")
    assert world["app"].test_cli_runner().invoke(args=["prune", "--keep-days", "0"]).exit_code == 2


def test_copy_to_after_a_prune_keeps_the_pruned_usage(world, tmp_path):
    prune_now(world["app"])
    target = tmp_path / "copy.sqlite"
    result = world["app"].test_cli_runner().invoke(args=["copy-to", str(target)])
    assert result.exit_code == 0, result.output
    copy = create_app({"TESTING": True, "DATABASE": str(target)})
    assert answers({**world, "app": copy, "client": copy.test_client()}, EVENTS)
    assert count_events(copy) == len(EVENTS) - len(OLD)
    response = copy.test_client().post("/v1/model-usage/events", json={"events": [OLD[0]]},
                                       headers=bearer(world["key"]))
    assert_error(response, 400, path="events.0.timestamp")  # the horizon came along


def test_rebuild_rollups_works_in_short_transactions_and_mends_every_rollup(world, monkeypatch):
    """One transaction per owner's UTC day, one per week and one for the local rollups; wrong
    sums, and a week of rows with no event behind them, are mended."""
    conn = connect(world["app"].config)
    with write_transaction(conn):
        conn.execute("UPDATE rollup_hour SET requests = requests + 1")
        conn.execute("UPDATE rollup_quarter SET platform_cost = platform_cost + 7")
        for table in ("rollup_week", "rollup_day", "rollup_hour", "rollup_quarter"):
            conn.execute(f"INSERT INTO {table} SELECT owner_id, slot_start - 52 * 604800, series_id, requests, unpriced, "
                         f"platform_tokens, user_tokens, platform_cost, user_cost, prompt_tokens, cached_prompt_tokens, "
                         f"reasoning_tokens FROM {table}")
    conn.close()
    transactions = []
    monkeypatch.setattr(ingest, "write_transaction", lambda db: transactions.append(1) or write_transaction(db))
    result = world["app"].test_cli_runner().invoke(args=["rebuild-rollups"])
    assert result.exit_code == 0, result.output
    weeks = (TODAY - (FIRST_DAY - timedelta(weeks=52))).days // 7 + 1
    assert len(transactions) >= weeks * 8 and f"({len(transactions)} short transactions)" in result.output
    with open_database(world["app"].config["DATABASE"]) as conn:
        assert_rollups_equal_a_rebuild(conn)
    assert answers(world, EVENTS)
