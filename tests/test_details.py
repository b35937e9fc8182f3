"""GET /v1/model-usage/<modelConfigId>: the config, its newest events, limits and ids."""
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import pytest

from conftest import assert_error, bearer, create_config, post_events
from owners import app, make_key  # noqa: F401 (one database for the module)
from support import catalogue_prices

START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def details(client, key, config_id, query=""):
    return client.get(f"/v1/model-usage/{config_id}{query}", headers=bearer(key))


def numbered_events(count, config_id="cfg_a", first=0):
    """Events a minute apart, sent in shuffled order so that newest-first is the server's work."""
    events = [
        {"id": f"ev-{n:05d}", "timestamp": (START + timedelta(minutes=n)).isoformat(), "modelConfigId": config_id,
         "promptTokens": n, "completionTokens": 1, "cost": 0}
        for n in range(first, first + count)
    ]
    return events[1::2] + events[::2]


def ids_newest_first(events):
    return [event["id"] for event in sorted(events, key=lambda event: event["timestamp"], reverse=True)]


def test_answer_has_the_config_and_every_event_field_exactly(client, make_key, engine):
    key = make_key()
    create_config(client, key, "cfg_a", "gpt-4o-mini", "OpenAI", displayName="Support bot")
    prompt, completion = catalogue_prices()["gpt-4o-mini"]
    events = [
        # a catalogue price: micro-dollars rounded half up (3 * 0.15 + 1 * 0.6 = 1.05 -> 1)
        {"id": "priced", "timestamp": "2026-03-02T09:15:00+05:30", "modelConfigId": "cfg_a",
         "promptTokens": 3, "completionTokens": 1, "executionTime": 1.25, "cacheWriteTokens": 2},
        # a cost sent: rounded half even to micro-dollars; executionTime to microseconds
        {"id": "sent", "timestamp": "2026-03-01T22:00:00.5-08:00", "modelConfigId": "cfg_a",
         "promptTokens": 150, "completionTokens": 350, "totalTokens": 512, "cost": 0.0420005,
         "executionTime": 1234.5678905, "billingSource": "user",
         "cachedPromptTokens": 100, "cacheWriteTokens": 50, "reasoningTokens": 350},
        {"id": "plain", "timestamp": "2026-03-02T03:00:00", "modelConfigId": "cfg_a",
         "promptTokens": 0, "completionTokens": 0, "cost": 0, "executionTime": 0.000001},
        {"id": "untimed", "timestamp": "2026-03-01T18:00:00+05:45", "modelConfigId": "cfg_a",
         "promptTokens": 10, "completionTokens": 2},
    ]
    post_events(client, key, events)
    micro = Decimal("0.000001")
    catalogue = lambda p, c: float(((p * Decimal(prompt) + c * Decimal(completion)) / 10**6).quantize(micro, ROUND_HALF_UP))
    response = details(client, key, "cfg_a")
    assert response.status_code == 200
    assert response.get_json() == {
        "meta": {"dataSource": f"usage-server-{engine}"},
        "modelConfig": {"displayName": "Support bot", "id": "cfg_a", "modelId": "gpt-4o-mini", "provider": "OpenAI"},
        "recentUsage": [  # newest first, instants in UTC
            {"id": "sent", "timestamp": "2026-03-02T06:00:00.500Z", "completionTokens": 350,
             "estimatedCost": float(Decimal("0.0420005").quantize(micro, ROUND_HALF_EVEN)),
             "executionTime": float(Decimal("1234.5678905").quantize(micro, ROUND_HALF_EVEN)),
             "promptTokens": 150, "totalTokens": 512, "billingSource": "user", "priced": True,
             "priceSource": "sent", "cachedPromptTokens": 100, "cacheWriteTokens": 50, "reasoningTokens": 350},
            {"id": "priced", "timestamp": "2026-03-02T03:45:00Z", "completionTokens": 1,
             "estimatedCost": catalogue(3, 1), "executionTime": 1.25, "promptTokens": 3, "totalTokens": 4,
             "billingSource": "platform", "priced": True, "priceSource": "catalogue",
             "cachedPromptTokens": 0, "cacheWriteTokens": 2, "reasoningTokens": 0},
            {"id": "plain", "timestamp": "2026-03-02T03:00:00Z", "completionTokens": 0, "estimatedCost": 0.0,
             "executionTime": 0.000001, "promptTokens": 0, "totalTokens": 0, "billingSource": "platform", "priced": True,
             "priceSource": "sent", "cachedPromptTokens": 0, "cacheWriteTokens": 0, "reasoningTokens": 0},
            {"id": "untimed", "timestamp": "2026-03-01T12:15:00Z", "completionTokens": 2,
             "estimatedCost": catalogue(10, 2), "executionTime": None, "promptTokens": 10, "totalTokens": 12,
             "billingSource": "platform", "priced": True, "priceSource": "catalogue",
             "cachedPromptTokens": 0, "cacheWriteTokens": 0, "reasoningTokens": 0},
        ],
    }


def test_unpriced_events_say_so_instead_of_passing_for_a_real_zero(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_local", "in-house-model", "Acme")
    post_events(client, key, [
        {"id": "no-price", "timestamp": "2026-03-01T00:00:00Z", "modelConfigId": "cfg_local", "promptTokens": 5, "completionTokens": 5},
        {"id": "free", "timestamp": "2026-03-01T00:00:01Z", "modelConfigId": "cfg_local", "promptTokens": 5, "completionTokens": 5, "cost": 0},
    ])
    usage = details(client, key, "cfg_local").get_json()["recentUsage"]
    assert [(item["id"], item["estimatedCost"], item["priced"], item["priceSource"]) for item in usage] == [
        ("free", 0.0, True, "sent"), ("no-price", 0.0, False, "none")]


@pytest.mark.parametrize("query, count", [("", 50), ("?limit=1", 1), ("?limit=49", 49), ("?limit=1000", 60), ("?limit=61", 60)])
def test_recent_usage_is_newest_first_and_at_most_limit(client, make_key, query, count):
    key = make_key()
    create_config(client, key, "cfg_a")
    create_config(client, key, "cfg_b")
    events = numbered_events(60)
    post_events(client, key, events)
    post_events(client, key, numbered_events(5, "cfg_b", first=1000))  # newer, but another config's
    body = details(client, key, "cfg_a", query).get_json()
    assert [item["id"] for item in body["recentUsage"]] == ids_newest_first(events)[:count]


def test_limit_1000_returns_a_thousand(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    events = numbered_events(1001)
    post_events(client, key, events[:1000])
    post_events(client, key, events[1000:])
    body = details(client, key, "cfg_a", "?limit=1000").get_json()
    assert [item["id"] for item in body["recentUsage"]] == ids_newest_first(events)[:1000]


def test_equal_instants_keep_a_stable_newest_stored_first_order(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    same = [{"id": f"tie-{n}", "timestamp": "2026-03-01T10:00:00Z", "modelConfigId": "cfg_a",
             "promptTokens": 1, "completionTokens": 1} for n in (2, 0, 1)]
    post_events(client, key, same)
    first = [item["id"] for item in details(client, key, "cfg_a").get_json()["recentUsage"]]
    assert first == ["tie-1", "tie-0", "tie-2"]
    assert [item["id"] for item in details(client, key, "cfg_a", "?limit=2").get_json()["recentUsage"]] == first[:2]


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=-1", "?limit=abc", "?limit=1.5", "?limit=",
                                   "?limit=1e3", "?limit=5&limit=6"])
def test_bad_limits_are_400_naming_limit(client, make_key, query):
    key = make_key()
    create_config(client, key, "cfg_a")
    body = assert_error(details(client, key, "cfg_a", query), 400, "invalid_request", path="limit")
    assert [item["path"] for item in body["details"]] == ["limit"]


def test_unknown_query_parameters_are_400(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a")
    body = assert_error(details(client, key, "cfg_a", "?offset=5"), 400, "invalid_request", path="offset")
    assert body["error"] == "offset: is not an accepted query parameter"
    assert body["details"] == [{"code": "UNKNOWN_FIELD", "message": "is not an accepted query parameter",
                                "path": "offset", "suggestion": "use one of: limit"}]


@pytest.mark.parametrize("config_id", ["x" * 65, "bad%20id", "a%2Fb", "a/b", "caf%C3%A9", "a:b", "a%00b", "%2E%2E%2Fsecret"])
def test_malformed_ids_are_400(client, make_key, config_id):
    key = make_key()
    body = assert_error(details(client, key, config_id), 400, "invalid_request", path="modelConfigId")
    assert body["details"][0]["code"] == "INVALID_ID"


def test_a_64_character_id_is_well_formed(client, make_key):
    key = make_key()
    assert_error(details(client, key, "x" * 64), 404, "not_found")
    create_config(client, key, "x" * 64)
    assert details(client, key, "x" * 64).status_code == 200


def test_not_owned_is_answered_exactly_like_missing(client, make_key):
    alice, bob = make_key("alice"), make_key("bob")
    missing = details(client, bob, "cfg_secret")
    create_config(client, alice, "cfg_secret")
    post_events(client, alice, numbered_events(3, "cfg_secret"))
    not_owned = details(client, bob, "cfg_secret")
    assert_error(missing, 404, "not_found")
    assert (not_owned.status_code, not_owned.get_data(), not_owned.headers.get("Content-Type")) == \
        (missing.status_code, missing.get_data(), missing.headers.get("Content-Type"))
    usage = client.get("/v1/model-usage?modelConfigId=cfg_secret", headers=bearer(bob))
    assert_error(usage, 404, "not_found")


def test_needs_the_read_scope(client, make_key):
    writer = make_key("acme", ["write"])
    create_config(client, writer, "cfg_a")
    assert_error(details(client, writer, "cfg_a"), 403, "forbidden")
    assert_error(client.get("/v1/model-usage/cfg_a"), 401, "unauthorized")
