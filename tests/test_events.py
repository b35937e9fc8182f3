"""POST /v1/model-usage/events: every rule of the contract, proven by reading usage back.

Events go in through the API with timestamps in several UTC offsets and come back out
through GET /v1/model-usage (compared with the independent oracle) and the details
endpoint; every rejected batch is shown to have stored nothing.
"""
import io
import json
import random
import socket
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from types import SimpleNamespace

import pytest
import requests

from conftest import FROZEN_NOW, assert_error, bearer, create_config, post_events
from gunicorn_server import gunicorn
from oracle import event_cost_micros, expected_usage, parse_instant
from otlp_spans import export, llm, otlp_json
from owners import app, make_key  # noqa: F401 (one database for the module)
from support import catalogue_prices, prepare_database
from usage_server import create_app
from usage_server.auth import create_key, hash_key
from usage_server.storage import connect, write_transaction

UTC = timezone.utc
OFFSETS = ("+05:30", "-08:00", "+05:45", "Z", "")
MIB = 1024 * 1024


def stamp(instant: datetime, offset: str) -> str:
    """`instant` written in the given offset ("Z", "" for none, or ±HH:MM)."""
    if offset in ("Z", ""):
        return instant.astimezone(UTC).replace(tzinfo=None).isoformat() + offset
    sign = 1 if offset[0] == "+" else -1
    zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    return instant.astimezone(zone).isoformat()


def event(n, config_id="cfg_a", **fields):
    return {"id": f"ev-{n}", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": config_id,
            "promptTokens": 100, "completionTokens": 20, **fields}


def usage(client, key, query="startDate=2026-03-01&endDate=2026-03-18"):
    response = client.get(f"/v1/model-usage?{query}", headers=bearer(key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def post(client, key, body):
    return client.post("/v1/model-usage/events", json=body, headers=bearer(key))


def post_raw(client, key, raw: bytes):
    return client.post("/v1/model-usage/events", data=raw, headers=bearer(key), content_type="application/json")


def snapshot(client, key, config_ids=("cfg_a",)):
    """Everything a reader can see of an owner's usage."""
    return {
        "usage": usage(client, key, "startDate=1970-01-01&endDate=2026-12-31&granularity=month"),
        "hours": usage(client, key, "startDate=2026-03-17&endDate=2026-03-18&granularity=hour"),
        "configs": client.get("/v1/model-configs/usage", headers=bearer(key)).get_json(),
        "details": {cid: client.get(f"/v1/model-usage/{cid}?limit=1000", headers=bearer(key)).get_json() for cid in config_ids},
    }


# --- read back exactly: the oracle ---------------------------------------------------------

CONFIGS = {
    "cfg_gpt": ("gpt-4o", "OpenAI", None),
    "cfg_gpt_eu": ("gpt-4o", "OpenAI", None),
    "cfg_haiku": ("claude-haiku-4-5", "Anthropic", None),
    "cfg_local": ("in-house-model", "Acme", None),  # no catalogue price: unpriced unless a cost is sent
    "cfg_named": ("gpt-4o-mini", "OpenAI", "Mini (EU region)"),
}
EDGES = [  # instants on UTC and local day edges, each written in every offset below
    datetime(2026, 3, 14, tzinfo=UTC),
    datetime(2026, 3, 13, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 3, 13, 18, 30, tzinfo=UTC),  # local midnight in +05:30
    datetime(2026, 3, 13, 18, 15, tzinfo=UTC),  # local midnight in +05:45
    datetime(2026, 3, 8, 8, tzinfo=UTC),  # local midnight in -08:00, a daylight-saving day in Los Angeles
    datetime(2026, 3, 18, 15, 29, 59, tzinfo=UTC),
]


def token_details(rng: random.Random, prompt: int, completion: int) -> dict:
    """Some, all or none of the optional token details (explicit zeros too), each within its count."""
    details = {}
    if rng.random() < 0.5:
        details["cachedPromptTokens"] = rng.choice([0, prompt, rng.randrange(0, prompt + 1)])
    if rng.random() < 0.3:
        details["cacheWriteTokens"] = rng.randrange(0, prompt - details.get("cachedPromptTokens", 0) + 1)
    if rng.random() < 0.4:
        details["reasoningTokens"] = rng.choice([0, completion, rng.randrange(0, completion + 1)])
    return details


def oracle_events(rng: random.Random, count: int) -> list[dict]:
    start = datetime(2026, 2, 20, tzinfo=UTC)
    span = int((FROZEN_NOW - start).total_seconds() * 1_000_000)
    instants = EDGES * len(OFFSETS) + [start + timedelta(microseconds=rng.randrange(span)) for _ in range(count)]
    events = []
    for n, instant in enumerate(instants):
        if n >= len(EDGES) * len(OFFSETS) and rng.random() < 0.5:
            instant = instant.replace(microsecond=instant.microsecond // 1000 * 1000 if rng.random() < 0.5 else 0)
        item = {"id": f"o:{n}", "timestamp": stamp(instant, OFFSETS[n % len(OFFSETS)]),
                "modelConfigId": rng.choice(sorted(CONFIGS)),
                "promptTokens": rng.randrange(0, 20_000), "completionTokens": rng.randrange(0, 4_000)}
        if rng.random() < 0.2:
            item["totalTokens"] = item["promptTokens"] + item["completionTokens"] + rng.randrange(0, 50)
        if rng.random() < 0.3:  # sent with up to 7 decimals: rounded half even to micro-dollars
            item["cost"] = float(Decimal(rng.randrange(0, 10**7)) / 10**7)
        if rng.random() < 0.4:
            item["billingSource"] = rng.choice(("platform", "user"))
        if rng.random() < 0.5:
            item["executionTime"] = rng.randrange(0, 10**7) / 1000
        item.update(token_details(rng, item["promptTokens"], item["completionTokens"]))
        events.append(item)
    return events


@pytest.fixture(scope="module")
def ingested(engine, new_database):
    """One database, 300 events ingested in batches (one re-sent), read by every oracle test."""
    database = new_database(engine)
    key = prepare_database(database)["acme"]
    app = create_app({"TESTING": True, "DATABASE": database})
    client = app.test_client()
    configs = {}
    for config_id, (model_id, provider, name) in CONFIGS.items():
        extra = {"modelName": name} if name else {}
        configs[config_id] = create_config(client, key, config_id, model_id, provider, **extra)
    events = oracle_events(random.Random(20260318), 270)
    for first in range(0, len(events), 120):
        batch = events[first:first + 120]
        assert post_events(client, key, batch) == {"accepted": len(batch), "duplicates": 0, "conflicts": 0}
    assert post_events(client, key, events[:120]) == {"accepted": 0, "duplicates": 120, "conflicts": 0}
    return SimpleNamespace(client=client, key=key, configs=configs, events=events, prices=catalogue_prices())


QUERIES = [
    # (query string, start, end, granularity, time zone, config)
    ("", date(2026, 3, 12), date(2026, 3, 18), "day", "UTC", None),
    ("period=last_30_days&granularity=week", date(2026, 2, 17), date(2026, 3, 18), "week", "UTC", None),
    ("startDate=2026-02-01&endDate=2026-03-18&granularity=month", date(2026, 2, 1), date(2026, 3, 18), "month", "UTC", None),
    ("startDate=2026-03-13&endDate=2026-03-14&granularity=hour", date(2026, 3, 13), date(2026, 3, 14), "hour", "UTC", None),
    ("startDate=2026-03-10&endDate=2026-03-16&timezone=Asia/Kolkata", date(2026, 3, 10), date(2026, 3, 16), "day", "Asia/Kolkata", None),
    ("startDate=2026-03-14&endDate=2026-03-14&granularity=hour&timezone=Asia/Kathmandu",
     date(2026, 3, 14), date(2026, 3, 14), "hour", "Asia/Kathmandu", None),
    ("startDate=2026-03-01&endDate=2026-03-15&granularity=week&timezone=America/Los_Angeles",
     date(2026, 3, 1), date(2026, 3, 15), "week", "America/Los_Angeles", None),
    ("startDate=2026-03-07&endDate=2026-03-09&granularity=hour&timezone=America/Los_Angeles",
     date(2026, 3, 7), date(2026, 3, 9), "hour", "America/Los_Angeles", None),
    ("startDate=2026-02-20&endDate=2026-03-18&modelConfigId=cfg_local", date(2026, 2, 20), date(2026, 3, 18), "day", "UTC", "cfg_local"),
    ("period=current_month&granularity=hour&modelConfigId=cfg_haiku&timezone=Asia/Kolkata",
     date(2026, 3, 1), date(2026, 3, 18), "hour", "Asia/Kolkata", "cfg_haiku"),
]


@pytest.mark.parametrize("query, start, end, granularity, zone, config_id", QUERIES, ids=[q[0] or "default" for q in QUERIES])
def test_usage_read_back_matches_the_oracle(ingested, frozen_now, query, start, end, granularity, zone, config_id):
    body = usage(ingested.client, ingested.key, query)
    expected = expected_usage(ingested.events, ingested.configs, ingested.prices, start, end, granularity, zone, config_id)
    assert body["summary"] == expected["summary"]
    assert body["usageByModel"] == expected["usageByModel"]
    assert list(body["usageByModel"]) == list(expected["usageByModel"])
    assert body["timeSeries"] == expected["timeSeries"]
    assert body["meta"]["unpricedRequests"] == expected["unpricedRequests"]
    assert sum(model["unpricedRequests"] for model in body["usageByModel"].values()) == expected["unpricedRequests"]
    assert (body["meta"]["startDate"], body["meta"]["endDate"]) == (start.isoformat(), end.isoformat())


def utc_text(text: str) -> str:
    """The instant as the API writes it: UTC, with Z, fraction only when there is one."""
    instant = parse_instant(text)
    spec = "seconds" if not instant.microsecond else "milliseconds" if not instant.microsecond % 1000 else "microseconds"
    return instant.isoformat(timespec=spec).replace("+00:00", "Z")


@pytest.mark.parametrize("config_id", sorted(CONFIGS))
def test_details_read_back_every_event_exactly(ingested, config_id):
    model_id = CONFIGS[config_id][0]
    mine = [item for item in ingested.events if item["modelConfigId"] == config_id]
    mine.sort(key=lambda item: parse_instant(item["timestamp"]), reverse=True)
    expected = []
    for item in mine:
        cost, priced = event_cost_micros({**item, "_model_id": model_id}, ingested.prices)
        execution = item.get("executionTime")
        expected.append({
            "id": item["id"],
            "timestamp": utc_text(item["timestamp"]),
            "completionTokens": item["completionTokens"],
            "estimatedCost": float(Decimal(cost) / 10**6),
            "executionTime": None if execution is None else float(Decimal(str(execution)).quantize(Decimal("0.000001"))),
            "promptTokens": item["promptTokens"],
            "totalTokens": item.get("totalTokens", item["promptTokens"] + item["completionTokens"]),
            "billingSource": item.get("billingSource", "platform"),
            "priced": priced,
            "priceSource": "sent" if item.get("cost") is not None else "catalogue" if priced else "none",
            "cachedPromptTokens": item.get("cachedPromptTokens", 0),
            "cacheWriteTokens": item.get("cacheWriteTokens", 0),
            "reasoningTokens": item.get("reasoningTokens", 0),
        })
    response = ingested.client.get(f"/v1/model-usage/{config_id}?limit=1000", headers=bearer(ingested.key))
    body = response.get_json()
    assert body["modelConfig"] == {key: ingested.configs[config_id][key] for key in ("displayName", "id", "modelId", "provider")}
    ids = [item["id"] for item in body["recentUsage"]]
    assert sorted(ids) == sorted(item["id"] for item in expected)
    # equal instants are ordered newest stored first; compare as a mapping, then check the order
    assert {item["id"]: item for item in body["recentUsage"]} == {item["id"]: item for item in expected}
    instants = [parse_instant(item["timestamp"]) for item in body["recentUsage"]]
    assert instants == sorted(instants, reverse=True)


def test_config_usage_counts_every_stored_event_once(ingested):
    body = ingested.client.get("/v1/model-configs/usage", headers=bearer(ingested.key)).get_json()
    expected = []
    for config_id in sorted(CONFIGS):  # created within one second: ordered by id
        mine = [parse_instant(item["timestamp"]) for item in ingested.events if item["modelConfigId"] == config_id]
        expected.append({"id": config_id, "provider": CONFIGS[config_id][1], "modelId": CONFIGS[config_id][0],
                         "usageCount": len(mine), "lastUsedAt": utc_text(max(mine).isoformat())})
    assert sorted(body["data"], key=lambda item: item["id"]) == expected
    assert body["total"] == len(CONFIGS)


# --- idempotency ----------------------------------------------------------------------------


def test_resending_a_batch_changes_nothing(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    batch = [event(n, timestamp=stamp(datetime(2026, 3, 17, 20, n, tzinfo=UTC), OFFSETS[n % 5]), cost=0.001 * n)
             for n in range(40)]
    assert post_events(client, key, batch) == {"accepted": 40, "duplicates": 0, "conflicts": 0}
    before = snapshot(client, key)
    assert before["usage"]["summary"]["totalRequests"] == 40
    for _ in range(2):
        assert post_events(client, key, batch) == {"accepted": 0, "duplicates": 40, "conflicts": 0}
    # the same events, each instant written in another offset, are the same payload
    shifted = [{**item, "timestamp": stamp(parse_instant(item["timestamp"]), "+05:45")} for item in batch]
    assert post_events(client, key, shifted) == {"accepted": 0, "duplicates": 40, "conflicts": 0}
    assert snapshot(client, key) == before


def test_duplicate_ids_inside_one_batch_are_stored_once(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    first = event(1, promptTokens=7)
    batch = [first, dict(first), event(2), {**first, "promptTokens": 8}, event(2, billingSource="user")]
    assert post_events(client, key, batch) == {"accepted": 2, "duplicates": 3, "conflicts": 2}
    recent = client.get("/v1/model-usage/cfg_a", headers=bearer(key)).get_json()["recentUsage"]
    assert sorted((item["id"], item["promptTokens"], item["billingSource"]) for item in recent) == \
        [("ev-1", 7, "platform"), ("ev-2", 100, "platform")]
    assert usage(client, key)["summary"]["totalRequests"] == 2


@pytest.mark.parametrize("change", [
    {"promptTokens": 101}, {"completionTokens": 0}, {"totalTokens": 121}, {"cost": 0.5}, {"executionTime": 2},
    {"billingSource": "user"}, {"timestamp": "2026-03-18T10:00:00.000001Z"}, {"modelConfigId": "cfg_b"},
])
def test_a_resent_id_with_another_payload_is_a_conflict_and_the_first_copy_stays(client, make_key, change):
    key = make_key()
    create_config(client, key, "cfg_a")
    create_config(client, key, "cfg_b")
    assert post_events(client, key, [event(1)]) == {"accepted": 1, "duplicates": 0, "conflicts": 0}
    before = snapshot(client, key, ("cfg_a", "cfg_b"))
    assert post_events(client, key, [event(1, **change), event(2)]) == {"accepted": 1, "duplicates": 1, "conflicts": 1}
    after = snapshot(client, key, ("cfg_a", "cfg_b"))
    assert [item["id"] for item in after["details"]["cfg_a"]["recentUsage"]] == ["ev-2", "ev-1"]
    assert after["details"]["cfg_a"]["recentUsage"][1] == before["details"]["cfg_a"]["recentUsage"][0]
    assert after["details"]["cfg_b"] == before["details"]["cfg_b"]


def test_event_ids_are_unique_per_owner_not_across_owners(client, make_key):
    alice, bob = make_key("alice"), make_key("bob")
    create_config(client, alice, "cfg_a")
    create_config(client, bob, "cfg_a")
    assert post_events(client, alice, [event(1)]) == {"accepted": 1, "duplicates": 0, "conflicts": 0}
    assert post_events(client, bob, [event(1, promptTokens=5)]) == {"accepted": 1, "duplicates": 0, "conflicts": 0}
    assert usage(client, alice)["summary"]["totalTokens"] == 120
    assert usage(client, bob)["summary"]["totalTokens"] == 25


# --- all or nothing ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad, path", [
    ({"timestamp": "2026-03-18T25:00:00Z"}, "events.3.timestamp"),
    ({"modelConfigId": "cfg_missing"}, "events.3.modelConfigId"),
    ({"promptTokens": -1}, "events.3.promptTokens"),
])
def test_a_batch_with_one_bad_event_stores_nothing(client, make_key, bad, path):
    key = make_key()
    create_config(client, key, "cfg_a")
    post_events(client, key, [event("old")])
    before = snapshot(client, key)
    batch = [event(n) for n in range(6)]
    batch[3] = {**batch[3], **bad}
    body = assert_error(post(client, key, {"events": batch}), 400, "invalid_request", path=path)
    assert [item["path"] for item in body["details"]] == [path]
    assert snapshot(client, key) == before
    good = batch[:3] + batch[4:]
    assert post_events(client, key, good) == {"accepted": 5, "duplicates": 0, "conflicts": 0}


def test_every_bad_event_of_a_batch_is_named(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    batch = [event(0), event(1, promptTokens="1"), event(2), event(3, billingSource="both", cost=-1)]
    body = assert_error(post(client, key, {"events": batch}), 400, "invalid_request")
    assert sorted(item["path"] for item in body["details"]) == \
        ["events.1.promptTokens", "events.3.billingSource", "events.3.cost"]
    assert usage(client, key)["summary"]["totalRequests"] == 0


# --- every field rule ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(app):
    """One owner with one config, for the many rejected batches (they store nothing)."""
    conn = connect(app.config)
    with write_transaction(conn):
        _, key = create_key(conn, "rules", ["read", "write"])
    conn.close()
    client = app.test_client()
    create_config(client, key, "cfg_a")
    create_config(client, key, "x" * 64)
    return SimpleNamespace(client=client, key=key)


REQUIRED = ["id", "timestamp", "modelConfigId", "promptTokens", "completionTokens"]
OPTIONAL = ["totalTokens", "cost", "executionTime", "billingSource"]
BAD_FIELDS = [
    *[(field, "missing", "REQUIRED") for field in REQUIRED],
    *[(field, None, "INVALID_TYPE") for field in REQUIRED + OPTIONAL],
    ("id", "", "INVALID_ID"), ("id", "x" * 129, "INVALID_ID"), ("id", "a b", "INVALID_ID"), ("id", "a/b", "INVALID_ID"),
    ("id", "caf\u00e9", "INVALID_ID"), ("id", "a\nb", "INVALID_ID"), ("id", 17, "INVALID_TYPE"), ("id", ["a"], "INVALID_TYPE"),
    ("timestamp", "", "INVALID_TIMESTAMP"), ("timestamp", "yesterday", "INVALID_TIMESTAMP"),
    ("timestamp", "2026-02-30T00:00:00Z", "INVALID_TIMESTAMP"), ("timestamp", "2026-03-18T24:00:01Z", "INVALID_TIMESTAMP"),
    ("timestamp", "2026-03-18T10:00:00+24:00", "INVALID_TIMESTAMP"), ("timestamp", "2026-03-18T10:00:00 UTC", "INVALID_TIMESTAMP"),
    ("timestamp", "1969-12-31T23:59:59Z", "OUT_OF_RANGE"), ("timestamp", "1970-01-01T00:30:00+01:00", "OUT_OF_RANGE"),
    ("timestamp", "9999-12-31T23:30:00-01:00", "OUT_OF_RANGE"), ("timestamp", 1773828000, "INVALID_TYPE"),
    ("modelConfigId", "", "INVALID_ID"), ("modelConfigId", "x" * 65, "INVALID_ID"), ("modelConfigId", "cfg a", "INVALID_ID"),
    ("modelConfigId", 1, "INVALID_TYPE"), ("modelConfigId", "cfg_nope", "UNKNOWN_MODEL_CONFIG"),
    *[(field, value, "INVALID_TYPE") for field in ("promptTokens", "completionTokens", "totalTokens")
      for value in ("5", True, 5.0, 5.5, [5], {"n": 5})],
    *[(field, value, "OUT_OF_RANGE") for field in ("promptTokens", "completionTokens", "totalTokens")
      for value in (-1, 10**12 + 1, 2**63, 2**64, -(2**63) - 1, 10**30)],
    *[(field, value, "INVALID_TYPE") for field in ("cost", "executionTime") for value in ("0.1", False, [1], {"usd": 1})],
    *[(field, value, "OUT_OF_RANGE") for field in ("cost", "executionTime") for value in (-0.01, -1, 2**64, 10**400, 1e300)],
    ("cost", 10**6 + 0.000001, "OUT_OF_RANGE"), ("executionTime", 10**7 + 1, "OUT_OF_RANGE"),
    ("billingSource", "PLATFORM", "INVALID_VALUE"), ("billingSource", "", "INVALID_VALUE"),
    ("billingSource", "both", "INVALID_VALUE"), ("billingSource", 1, "INVALID_TYPE"),
    ("model", "gpt-4o", "UNKNOWN_FIELD"), ("cost_usd", 1, "UNKNOWN_FIELD"), ("PromptTokens", 1, "UNKNOWN_FIELD"),
]


@pytest.mark.parametrize("field, value, code", BAD_FIELDS, ids=[f"{f}={v!r:.30}" for f, v, _ in BAD_FIELDS])
def test_each_field_rule(shared, field, value, code):
    batch = [event("ok-0"), event("ok-1"), event("bad")]
    if value == "missing":
        del batch[2][field]
    else:
        batch[2][field] = value
    body = assert_error(post(shared.client, shared.key, {"events": batch}), 400, "invalid_request")
    assert [(item["path"], item["code"]) for item in body["details"]] == [(f"events.2.{field}", code)]
    assert body["error"].startswith(f"events.2.{field}: ")
    assert stored_nothing(shared)


def stored_nothing(shared) -> bool:
    return shared.client.get("/v1/model-usage/cfg_a", headers=bearer(shared.key)).get_json()["recentUsage"] == []


BAD_BODIES = [
    ({"events": []}, "events", "BATCH_SIZE"),
    ({"events": [event(n) for n in range(1001)]}, "events", "BATCH_SIZE"),
    ({}, "events", "REQUIRED"),
    ({"events": None}, "events", "REQUIRED"),
    ({"events": {"0": event(0)}}, "events", "INVALID_TYPE"),
    ({"events": "ev-1"}, "events", "INVALID_TYPE"),
    ({"events": [event(0), "ev-1"]}, "events.1", "INVALID_TYPE"),
    ({"events": [event(0), [event(1)]]}, "events.1", "INVALID_TYPE"),
    ({"events": [event(0)], "dryRun": True}, "dryRun", "UNKNOWN_FIELD"),
]


@pytest.mark.parametrize("body, path, code", BAD_BODIES, ids=[f"{b!r:.40}" for b, _, _ in BAD_BODIES])
def test_batch_shape_rules(shared, body, path, code):
    body = assert_error(post(shared.client, shared.key, body), 400, "invalid_request")
    assert [(item["path"], item["code"]) for item in body["details"]] == [(path, code)]
    assert stored_nothing(shared)


RAW_BODIES = {
    "empty": b"",
    "truncated": b'{"events": [',
    "not-json": b"events=1",
    "array": b"[]",
    "string": b'"events"',
    "number": b"1",
    "null": b"null",
    "single-quotes": b"{'events': []}",
    "trailing-comma": b'{"events": [],}',
    "nan-cost": b'{"events": [{"id": "a", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", '
                b'"promptTokens": 1, "completionTokens": 1, "cost": NaN}]}',
    "infinity-cost": b'{"events": [{"id": "a", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", '
                     b'"promptTokens": 1, "completionTokens": 1, "cost": Infinity}]}',
    "minus-infinity-time": b'{"events": [{"id": "a", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", '
                           b'"promptTokens": 1, "completionTokens": 1, "executionTime": -Infinity}]}',
    "nan-tokens": b'{"events": [{"id": "a", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", '
                  b'"promptTokens": NaN, "completionTokens": 1}]}',
    "5000-digit-integer": b'{"events": [{"id": "a", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", '
                          b'"promptTokens": 1' + b"0" * 5000 + b', "completionTokens": 1}]}',
    "nested-100000-arrays": b"[" * 100_000 + b"]" * 100_000,
    "nested-100000-objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "nested-in-events": b'{"events": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    "nested-in-a-field": b'{"events": [{"id": "a", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", '
                         b'"promptTokens": 1, "completionTokens": 1, "cost": ' + b"[" * 900 + b"]" * 900 + b"}]}",
    "invalid-utf8": b'{"events": [{"id": "\xff\xfe"}]}',
    "lone-surrogate-id": b'{"events": [{"id": "\\ud800", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", '
                         b'"promptTokens": 1, "completionTokens": 1}]}',
}


@pytest.mark.parametrize("name", RAW_BODIES)
def test_bodies_that_are_not_a_valid_batch_are_400_never_500(shared, name):
    response = post_raw(shared.client, shared.key, RAW_BODIES[name])
    assert_error(response, 400, "invalid_request")
    assert stored_nothing(shared)


ACCEPTED_EDGES = [
    {"id": "x" * 128}, {"id": "a:b.c-d_E9"}, {"id": "0"},
    {"promptTokens": 0, "completionTokens": 0}, {"promptTokens": 10**12, "completionTokens": 10**12},
    {"totalTokens": 0}, {"totalTokens": 10**12}, {"cost": 0}, {"cost": 10**6}, {"cost": 1e-9}, {"cost": 0.000001},
    {"executionTime": 0}, {"executionTime": 10**7}, {"billingSource": "user"}, {"billingSource": "platform"},
    {"modelConfigId": "x" * 64},
]


@pytest.mark.parametrize("fields", ACCEPTED_EDGES, ids=[f"{f!r:.40}" for f in ACCEPTED_EDGES])
def test_values_on_the_edge_of_each_rule_are_accepted(client, make_key, fields):
    key = make_key()
    create_config(client, key, "cfg_a")
    create_config(client, key, "x" * 64)
    sent = event(1, **fields)
    assert post_events(client, key, [sent]) == {"accepted": 1, "duplicates": 0, "conflicts": 0}
    config_id = sent["modelConfigId"]
    stored = client.get(f"/v1/model-usage/{config_id}", headers=bearer(key)).get_json()["recentUsage"]
    assert [item["id"] for item in stored] == [sent["id"]]


TIMESTAMPS = [  # as sent -> as stored and answered (UTC), worked out by hand
    ("2026-03-18T10:00:00+05:30", "2026-03-18T04:30:00Z"),
    ("2026-03-18T10:00:00-08:00", "2026-03-18T18:00:00Z"),
    ("2026-03-18T10:00:00+05:45", "2026-03-18T04:15:00Z"),
    ("2026-03-18T10:00:00Z", "2026-03-18T10:00:00Z"),
    ("2026-03-18T10:00:00", "2026-03-18T10:00:00Z"),
    ("2026-03-18T10:00:00+00:00", "2026-03-18T10:00:00Z"),
    ("2026-03-18T00:30:00+01:00", "2026-03-17T23:30:00Z"),
    ("2026-03-17T20:00:00-08:00", "2026-03-18T04:00:00Z"),
    ("2026-03-18T10:00:00.5Z", "2026-03-18T10:00:00.500Z"),
    ("2026-03-18T10:00:00.000001-08:00", "2026-03-18T18:00:00.000001Z"),
    ("2026-03-18T10:00:00.123456789+05:30", "2026-03-18T04:30:00.123456Z"),
    ("1970-01-01T05:30:00+05:30", "1970-01-01T00:00:00Z"),
    ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
]


@pytest.mark.parametrize("sent, answered", TIMESTAMPS)
def test_timestamps_are_normalised_to_utc(client, make_key, sent, answered):
    key = make_key()
    create_config(client, key, "cfg_a")
    post_events(client, key, [event(1, timestamp=sent)])
    stored = client.get("/v1/model-usage/cfg_a", headers=bearer(key)).get_json()["recentUsage"]
    assert stored[0]["timestamp"] == answered
    last_used = client.get("/v1/model-configs/usage", headers=bearer(key)).get_json()["data"][0]["lastUsedAt"]
    assert last_used == answered


def test_a_full_batch_of_1000_is_accepted(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    batch = [event(n, timestamp=stamp(datetime(2026, 3, 18, tzinfo=UTC) + timedelta(seconds=n), OFFSETS[n % 5]))
             for n in range(1000)]
    assert post_events(client, key, batch) == {"accepted": 1000, "duplicates": 0, "conflicts": 0}
    assert usage(client, key)["summary"]["totalRequests"] == 1000


# --- body size ------------------------------------------------------------------------------------


def padded_batch(size: int) -> bytes:
    """A valid one-event batch padded with JSON whitespace to exactly `size` bytes."""
    raw = json.dumps({"events": [event("big")]}).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def test_a_body_of_exactly_2_mib_is_read(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    response = post_raw(client, key, padded_batch(2 * MIB))
    assert response.get_json() == {"accepted": 1, "duplicates": 0, "conflicts": 0}


def test_a_body_over_2_mib_is_413_and_stores_nothing(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    response = post_raw(client, key, padded_batch(2 * MIB + 1))
    assert_error(response, 413, "payload_too_large")
    assert response.headers["Connection"] == "close"
    assert usage(client, key)["summary"]["totalRequests"] == 0


def post_chunked(client, key, raw: bytes):
    """As a server passes a chunked body on: no length, a stream that ends with the body."""
    return client.post("/v1/model-usage/events", input_stream=io.BytesIO(raw),
                       headers={**bearer(key), "Transfer-Encoding": "chunked"},
                       content_type="application/json", environ_overrides={"wsgi.input_terminated": True})


def test_a_body_without_content_length_is_held_to_2_mib_too(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    assert_error(post_chunked(client, key, padded_batch(2 * MIB + 1)), 413, "payload_too_large")
    assert usage(client, key)["summary"]["totalRequests"] == 0
    assert post_chunked(client, key, padded_batch(2 * MIB)).get_json() == {"accepted": 1, "duplicates": 0, "conflicts": 0}


def read_http_response(sock) -> tuple[str, dict, bytes]:
    """Status line, headers and exactly Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a complete answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed in the middle of the answer: {body!r}"
        body += chunk
    return status, headers, body


def test_a_real_server_answers_an_oversized_body_with_a_complete_413(database, tmp_path):
    key = prepare_database(database)["acme"]
    body = padded_batch(2 * MIB + 100_000)
    head = (f"POST /v1/model-usage/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    expected = {"error": "the request body is larger than the 2 MiB limit", "code": "payload_too_large"}
    with gunicorn(database, tmp_path / "gunicorn.log", workers=1) as base:
        port = int(base.rsplit(":", 1)[1])
        # a client that sends the whole body before reading
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(head + body)
            status, headers, answer = read_http_response(sock)
        assert status.startswith("HTTP/1.1 413 ")
        assert headers["content-type"] == "application/json" and headers["connection"] == "close"
        assert json.loads(answer) == expected
        # a client that waits for an answer before sending the body gets it at once
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(head)
            status, headers, answer = read_http_response(sock)
        assert status.startswith("HTTP/1.1 413 ") and json.loads(answer) == expected
        # an ordinary HTTP client, with a Content-Length and chunked, and the single worker is free again afterwards
        response = requests.post(f"{base}/v1/model-usage/events", data=body, headers=bearer(key), timeout=120)
        assert (response.status_code, response.json()) == (413, expected)
        chunks = (body[start:start + 65536] for start in range(0, len(body), 65536))
        response = requests.post(f"{base}/v1/model-usage/events", data=chunks, headers=bearer(key), timeout=120)
        assert (response.request.headers.get("Transfer-Encoding"), response.status_code, response.json()) == \
            ("chunked", 413, expected)
        assert requests.get(f"{base}/health", timeout=120).status_code == 200


# --- what is stored ----------------------------------------------------------------------------


def test_model_id_provider_and_name_are_copied_when_the_event_is_stored(app, client, make_key, frozen_now):
    key = make_key()
    old = create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    before = [event(n, timestamp=f"2026-03-1{n}T12:00:00+05:30") for n in range(3)]
    post_events(client, key, before)
    # No endpoint edits a config yet: change the row the way an edit would.
    conn = connect(app.config)
    conn.execute("UPDATE model_config SET model_id = 'claude-haiku-4-5', provider = 'Anthropic', "
                 "model_name = 'Haiku', display_name = 'Renamed' WHERE id = 'cfg_a' AND owner_id = "
                 "(SELECT owner_id FROM api_key WHERE key_hash = ?)", (hash_key(key),))
    conn.close()
    new = {**old, "modelId": "claude-haiku-4-5", "provider": "Anthropic", "modelName": "Haiku", "displayName": "Renamed"}
    after = [event(n, timestamp=f"2026-03-1{n}T12:00:00-08:00") for n in range(3, 7)]
    post_events(client, key, after)
    # the oracle sees the later events under a config of their own: what the server must keep apart
    events = before + [{**item, "modelConfigId": "cfg_a@edited"} for item in after]
    expected = expected_usage(events, {"cfg_a": old, "cfg_a@edited": new}, catalogue_prices(), date(2026, 3, 10), date(2026, 3, 18))
    body = usage(client, key, "startDate=2026-03-10&endDate=2026-03-18")
    assert body["usageByModel"] == expected["usageByModel"]
    assert list(body["usageByModel"]) == list(expected["usageByModel"])
    assert sorted(body["usageByModel"]) == ["claude-haiku-4-5", "gpt-4o"]
    assert body["summary"] == expected["summary"]
    assert client.get("/v1/model-usage/cfg_a", headers=bearer(key)).get_json()["modelConfig"] == \
        {"displayName": "Renamed", "id": "cfg_a", "modelId": "claude-haiku-4-5", "provider": "Anthropic"}


def micros_half_up(prompt_tokens, completion_tokens, price):
    """Catalogue cost: USD per million tokens times tokens is micro-dollars, rounded half up."""
    exact = prompt_tokens * Decimal(price[0]) + completion_tokens * Decimal(price[1])
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.mark.parametrize("model_id, prompt_tokens, completion_tokens", [
    ("gpt-4o", 1, 0), ("gpt-4o", 3, 0), ("gpt-4o", 1, 1), ("gpt-4o", 0, 1), ("gpt-4o-mini", 1, 0), ("gpt-4o-mini", 10, 0),
    ("gpt-4o-mini", 3, 1), ("gpt-4o-mini", 1, 3), ("gpt-5-nano", 10, 0), ("gpt-5-nano", 30, 0),
    ("claude-opus-4-1", 10**12, 10**12), ("gemini-2.5-flash", 12_345, 6_789), ("o4-mini", 999_999, 1),
])
def test_cost_defaults_to_the_catalogue_price_exactly(client, make_key, model_id, prompt_tokens, completion_tokens):
    key = make_key()
    create_config(client, key, "cfg_a", model_id, "Any")
    post_events(client, key, [event(1, promptTokens=prompt_tokens, completionTokens=completion_tokens)])
    micros = micros_half_up(prompt_tokens, completion_tokens, catalogue_prices()[model_id])
    recent = client.get("/v1/model-usage/cfg_a", headers=bearer(key)).get_json()["recentUsage"]
    assert (recent[0]["estimatedCost"], recent[0]["priced"]) == (float(Decimal(micros) / 10**6), True)
    body = usage(client, key)
    assert body["summary"]["totalCost"] == float(Decimal(micros) / 10**6)
    assert body["meta"]["unpricedRequests"] == 0


@pytest.mark.parametrize("sent, micros", [
    ("0.0000025", 2), ("0.0000035", 4), ("0.0000015", 2), ("0.0000005", 0), ("0.0000004999", 0), ("0.00000051", 1),
    ("123.4567895", 123_456_790), ("1E-7", 0), ("2.5e-6", 2), ("1000000", 10**12), ("0", 0),
])
def test_a_sent_cost_is_kept_to_the_micro_dollar_half_even(client, make_key, sent, micros):
    key = make_key()
    create_config(client, key, "cfg_a")
    raw = json.dumps({"events": [event(1)]}).replace('"completionTokens": 20', f'"completionTokens": 20, "cost": {sent}')
    assert post_raw(client, key, raw.encode()).get_json() == {"accepted": 1, "duplicates": 0, "conflicts": 0}
    recent = client.get("/v1/model-usage/cfg_a", headers=bearer(key)).get_json()["recentUsage"]
    assert recent[0]["estimatedCost"] == float(Decimal(micros) / 10**6)


def test_unpriced_models_are_counted_never_a_silent_zero(client, make_key, frozen_now):
    key = make_key()
    create_config(client, key, "cfg_local", "in-house-model", "Acme")
    create_config(client, key, "cfg_gpt", "gpt-4o", "OpenAI")
    events = [
        event(1, "cfg_local"), event(2, "cfg_local", billingSource="user"), event(3, "cfg_local", cost=0.25),
        event(4, "cfg_local", cost=0), event(5, "cfg_gpt"), event(6, "cfg_local", timestamp="2026-03-10T10:00:00Z"),
    ]
    post_events(client, key, events)
    configs = {c["id"]: c for c in client.get("/v1/model-configs", headers=bearer(key)).get_json()["data"]}
    for query, start in (("", date(2026, 3, 12)), ("period=last_30_days", date(2026, 2, 17))):
        body = usage(client, key, query)
        expected = expected_usage(events, configs, catalogue_prices(), start, date(2026, 3, 18))
        assert body["meta"]["unpricedRequests"] == expected["unpricedRequests"]
        assert body["summary"] == expected["summary"]
    assert usage(client, key, "")["meta"]["unpricedRequests"] == 2
    assert usage(client, key, "period=last_30_days")["meta"]["unpricedRequests"] == 3
    assert usage(client, key, "modelConfigId=cfg_gpt")["meta"]["unpricedRequests"] == 0
    recent = client.get("/v1/model-usage/cfg_local", headers=bearer(key)).get_json()["recentUsage"]
    assert sorted((item["id"], item["priced"]) for item in recent) == \
        [("ev-1", False), ("ev-2", False), ("ev-3", True), ("ev-4", True), ("ev-6", False)]


# --- who may write what -------------------------------------------------------------------------


def test_read_only_keys_get_403_on_every_write_endpoint(app, client, make_key):
    writer, reader = make_key("acme"), make_key("acme", ["read"])
    create_config(client, writer, "cfg_a")
    bodies = {"/v1/model-configs": {"id": "cfg_b", "modelId": "gpt-4o", "provider": "OpenAI"},
              "/v1/model-usage/events": {"events": [event(1)]},
              "/v1/traces": json.loads(otlp_json(export([llm(1, 1)]))),
              "/v1/budgets": {"name": "b", "amount": 1, "period": "day"}}
    write_rules = [rule.rule for rule in app.url_map.iter_rules() if "POST" in rule.methods]
    assert sorted(write_rules) == sorted(bodies)  # a new write endpoint must be added here
    before = snapshot(client, reader)
    for path, body in bodies.items():
        assert_error(client.post(path, json=body, headers=bearer(reader)), 403, "forbidden")
        assert_error(client.post(path, json=body, headers={"Authorization": reader}), 403, "forbidden")
    assert snapshot(client, reader) == before
    assert [c["id"] for c in client.get("/v1/model-configs", headers=bearer(reader)).get_json()["data"]] == ["cfg_a"]


def test_an_owner_cannot_write_to_or_read_another_owners_configs(client, make_key):
    alice, bob = make_key("alice"), make_key("bob")
    create_config(client, alice, "cfg_alice")
    create_config(client, bob, "cfg_bob")
    post_events(client, alice, [event(1, "cfg_alice")])
    before = snapshot(client, alice, ("cfg_alice",))
    body = assert_error(post(client, bob, {"events": [event(1, "cfg_bob"), event(2, "cfg_alice")]}), 400, "invalid_request")
    assert [(item["path"], item["code"]) for item in body["details"]] == [("events.1.modelConfigId", "UNKNOWN_MODEL_CONFIG")]
    assert snapshot(client, alice, ("cfg_alice",)) == before
    assert usage(client, bob)["summary"]["totalRequests"] == 0
    assert_error(client.get("/v1/model-usage/cfg_alice", headers=bearer(bob)), 404, "not_found")
    assert_error(client.get("/v1/model-usage?modelConfigId=cfg_alice", headers=bearer(bob)), 404, "not_found")
    assert [c["id"] for c in client.get("/v1/model-configs", headers=bearer(bob)).get_json()["data"]] == ["cfg_bob"]
