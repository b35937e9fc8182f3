"""GET /v1/model-usage against the oracle: every period, granularity, range rule and 400.

One database for the module per engine (built once, read by every test): two owners
sharing config ids, events placed around four pinned instants and exactly on the edges of every range.
"""
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from conftest import FROZEN_NOW, assert_error, bearer
from oracle import expected_body, expected_usage
from support import catalogue_prices
from usage_server import api, create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

UTC = timezone.utc

# "now" pinned at: the fixture's Wednesday, a new year at midnight, the last microsecond
# of a Sunday after a leap February, and a Monday morning.
NOWS = {
    "mid_march": FROZEN_NOW,
    "new_year": datetime(2026, 1, 1, tzinfo=UTC),
    "leap_sunday": datetime(2024, 3, 3, 23, 59, 59, 999999, tzinfo=UTC),
    "monday": datetime(2025, 6, 2, 9, 15, tzinfo=UTC),
}

# Every preset's range at every pinned instant, worked out by hand.
PRESETS = {
    "mid_march": {
        "today": ("2026-03-18", "2026-03-18"),
        "yesterday": ("2026-03-17", "2026-03-17"),
        "last_7_days": ("2026-03-12", "2026-03-18"),
        "last_30_days": ("2026-02-17", "2026-03-18"),
        "current_month": ("2026-03-01", "2026-03-18"),
        "last_month": ("2026-02-01", "2026-02-28"),
        "current_year": ("2026-01-01", "2026-03-18"),
    },
    "new_year": {
        "today": ("2026-01-01", "2026-01-01"),
        "yesterday": ("2025-12-31", "2025-12-31"),
        "last_7_days": ("2025-12-26", "2026-01-01"),
        "last_30_days": ("2025-12-03", "2026-01-01"),
        "current_month": ("2026-01-01", "2026-01-01"),
        "last_month": ("2025-12-01", "2025-12-31"),
        "current_year": ("2026-01-01", "2026-01-01"),
    },
    "leap_sunday": {
        "today": ("2024-03-03", "2024-03-03"),
        "yesterday": ("2024-03-02", "2024-03-02"),
        "last_7_days": ("2024-02-26", "2024-03-03"),
        "last_30_days": ("2024-02-03", "2024-03-03"),
        "current_month": ("2024-03-01", "2024-03-03"),
        "last_month": ("2024-02-01", "2024-02-29"),
        "current_year": ("2024-01-01", "2024-03-03"),
    },
    "monday": {
        "today": ("2025-06-02", "2025-06-02"),
        "yesterday": ("2025-06-01", "2025-06-01"),
        "last_7_days": ("2025-05-27", "2025-06-02"),
        "last_30_days": ("2025-05-04", "2025-06-02"),
        "current_month": ("2025-06-01", "2025-06-02"),
        "last_month": ("2025-05-01", "2025-05-31"),
        "current_year": ("2025-01-01", "2025-06-02"),
    },
}
PERIODS = list(PRESETS["mid_march"])
GRANULARITIES = ["hour", "day", "week", "month"]

CONFIGS = {
    "acme": [
        ("cfg_chat", "gpt-4o", "OpenAI"),
        ("cfg_chat_eu", "gpt-4o", "OpenAI"),  # a second config of the same model
        ("cfg_summary", "claude-haiku-4-5", "Anthropic"),
        ("cfg_custom", "acme-finetune-1", "Acme"),  # not in the catalogue: unpriced without a cost
        ("cfg_edge", "gemini-2.5-flash", "Google"),
        ("cfg_lab", "acme-lab-2", "Acme"),  # not in the catalogue either: a second unpriced model
    ],
    "globex": [
        ("cfg_chat", "claude-sonnet-4-5", "Anthropic"),  # same id as acme's, another model
        ("cfg_summary", "gpt-4o-mini", "OpenAI"),
    ],
}

# Placed relative to each pinned instant: (offset, owner, config, prompt, completion, cost, billing, extra)
AROUND_NOW = [
    (timedelta(0), "acme", "cfg_chat", 1200, 300, None, "platform", {"cachedPromptTokens": 1024, "reasoningTokens": 64}),
    (timedelta(minutes=20), "acme", "cfg_summary", 800, 100, 0.0125, "user", {}),
    (timedelta(hours=-1), "globex", "cfg_chat", 5000, 700, None, "platform",
     {"cachedPromptTokens": 3000, "cacheWriteTokens": 2000}),
    (timedelta(hours=-20), "acme", "cfg_custom", 300, 50, None, "platform", {}),
    (timedelta(days=-1, hours=-3), "acme", "cfg_chat_eu", 2500, 400, 0.031337, "user", {"totalTokens": 3100}),
    (timedelta(days=-3, minutes=-7), "globex", "cfg_summary", 900, 90, None, "user", {}),
    (timedelta(days=-5, hours=2), "acme", "cfg_chat", 100, 10, 0.0000015, "platform", {}),
    (timedelta(days=-6, hours=-10), "acme", "cfg_summary", 4000, 600, None, "platform",
     {"cachedPromptTokens": 3999, "cacheWriteTokens": 1, "reasoningTokens": 600}),
    (timedelta(days=-9), "acme", "cfg_custom", 700, 70, 0.4, "user", {}),
    (timedelta(days=-17, hours=5), "globex", "cfg_chat", 1500, 150, 0.25, "platform", {}),
    (timedelta(days=-24), "acme", "cfg_chat", 3000, 1000, None, "user", {"executionTime": 1.25}),
    (timedelta(days=-31, hours=-4), "acme", "cfg_chat_eu", 640, 64, None, "platform", {"cachedPromptTokens": 0}),
    (timedelta(days=-45), "acme", "cfg_summary", 10000, 2000, 1.5, "platform", {"reasoningTokens": 1500}),
    (timedelta(days=-75), "globex", "cfg_summary", 50, 5, None, "platform", {}),
    (timedelta(days=-80), "acme", "cfg_custom", 1, 1, 0.000001, "user", {}),
    (timedelta(hours=-2), "acme", "cfg_lab", 400, 40, None, "user", {}),
    (timedelta(days=-2), "acme", "cfg_lab", 500, 50, None, "platform", {}),
    (timedelta(days=-3), "acme", "cfg_lab", 90, 9, 0.09, "platform", {}),  # a cost sent: priced
    (timedelta(days=2), "acme", "cfg_chat", 999, 1, 9.99, "platform", {}),  # after "today"
    (timedelta(days=-400), "acme", "cfg_chat", 77, 7, 0.7, "platform", {}),  # a year earlier
]


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event(event_id, moment, config, prompt, completion, cost=None, billing="platform", **extra):
    body = {"id": event_id, "timestamp": moment if isinstance(moment, str) else instant(moment),
            "modelConfigId": config, "promptTokens": prompt, "completionTokens": completion,
            "billingSource": billing, **extra}
    if cost is not None:
        body["cost"] = cost
    return body


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def boundary_days(today: date) -> list[date]:
    """First days of every preset, and the day after today: where ranges start or stop."""
    first = today.replace(day=1)
    return [today, today - timedelta(days=6), today - timedelta(days=29), first,
            (first - timedelta(days=1)).replace(day=1), today.replace(month=1, day=1), today + timedelta(days=1)]


def build_events() -> dict[str, list[dict]]:
    events = {"acme": [], "globex": []}
    for name, now in NOWS.items():
        for number, (offset, owner, config, prompt, completion, cost, billing, extra) in enumerate(AROUND_NOW):
            events[owner].append(event(f"{name}-{number}", now + offset, config, prompt, completion, cost, billing, **extra))
        for number, day in enumerate(boundary_days(now.date())):
            edge = midnight(day)
            events["acme"].append(event(f"{name}-edge-{number}-in", edge, "cfg_summary", 40, 4, 0.01))
            events["acme"].append(event(f"{name}-edge-{number}-before", edge - timedelta(microseconds=1),
                                        "cfg_chat_eu", 20, 2, 0.02, "user"))
            events["globex"].append(event(f"{name}-edge-{number}-g", edge, "cfg_chat", 60, 6, 0.03))
    # custom range 2026-03-10 .. 2026-03-12 read in three zones: in and just out at both ends
    for zone, offset in (("utc", "Z"), ("la", "-07:00"), ("ktm", "+05:45")):
        events["acme"] += [
            event(f"range-{zone}-first", f"2026-03-10T00:00:00{offset}", "cfg_edge", 11, 1, 0.11),
            event(f"range-{zone}-before", f"2026-03-09T23:59:59.999999{offset}", "cfg_edge", 13, 1, 0.13),
            event(f"range-{zone}-last", f"2026-03-12T23:59:59.999999{offset}", "cfg_edge", 17, 1, 0.17),
            event(f"range-{zone}-after", f"2026-03-13T00:00:00{offset}", "cfg_edge", 19, 1, 0.19),
        ]
    # before a week or month bucket's start but outside the range that starts mid-bucket
    events["acme"] += [
        event("pre-week-monday", "2026-03-02T08:00:00Z", "cfg_chat", 500, 50, 0.5),
        event("pre-week-tuesday", "2026-03-03T23:59:59.999999Z", "cfg_summary", 600, 60, 0.06, "user"),
        event("pre-month", "2026-02-14T12:00:00Z", "cfg_chat_eu", 700, 70, 0.7),
    ]
    return events


EVENTS = build_events()


@pytest.fixture(scope="module")
def world(engine, new_database):
    """The module's app and data (keys and created configs of both owners), on each engine."""
    app = create_app({"TESTING": True, "DATABASE": new_database(engine), "BUSY_TIMEOUT_MS": 200})
    client = app.test_client()
    keys, configs = {}, {}
    conn = connect(app.config)
    with write_transaction(conn):
        for owner in CONFIGS:
            keys[owner] = create_key(conn, owner, ["read", "write"])[1]
    conn.close()
    for owner, items in CONFIGS.items():
        configs[owner] = {}
        for config_id, model_id, provider in items:
            response = client.post("/v1/model-configs", headers=bearer(keys[owner]),
                                   json={"id": config_id, "displayName": config_id, "modelId": model_id, "provider": provider})
            assert response.status_code == 201
            configs[owner][config_id] = response.get_json()
        response = client.post("/v1/model-usage/events", headers=bearer(keys[owner]), json={"events": EVENTS[owner]})
        assert response.get_json() == {"accepted": len(EVENTS[owner]), "duplicates": 0, "conflicts": 0}
    prices = catalogue_prices()
    return {"app": app, "client": client, "keys": keys, "configs": configs, "prices": prices}


@pytest.fixture
def pin(monkeypatch, frozen_now):
    """pin(name): "now" is NOWS[name] (the frozen_now fixture's instant by default)."""

    def pin_to(name):
        monkeypatch.setattr(api, "utc_now", lambda: NOWS[name])
        return NOWS[name].date()

    return pin_to


def micros(value) -> int:
    scaled = Decimal(value) * 10**6
    assert scaled == scaled.to_integral_value(), value
    return int(scaled)


def assert_parts_agree(response):
    """Summary = sum of usageByModel = sum of timeSeries, exactly, read from the JSON text."""
    body = json.loads(response.get_data(as_text=True), parse_float=Decimal)
    summary, models, points = body["summary"], list(body["usageByModel"].values()), body["timeSeries"]
    assert micros(summary["totalCost"]) == micros(summary["platformCost"]) + micros(summary["userCost"])
    assert summary["totalTokens"] == summary["platformTokens"] + summary["userTokens"]
    assert sum(micros(m["totalCost"]) for m in models) == micros(summary["totalCost"])
    assert sum(micros(p["cost"]) for p in points) == micros(summary["totalCost"])
    assert sum(m["requestCount"] for m in models) == summary["totalRequests"] == sum(p["requests"] for p in points)
    assert sum(m["totalTokens"] for m in models) == summary["totalTokens"] == sum(p["tokens"] for p in points)
    assert sum(m["unpricedRequests"] for m in models) == body["meta"]["unpricedRequests"]
    assert all(0 <= m["unpricedRequests"] <= m["requestCount"] for m in models)
    costs = [micros(m["totalCost"]) for m in models]
    assert costs == sorted(costs, reverse=True)


def check(world, owner, query, start, end, granularity, period, zone="UTC", config_id=None):
    """GET with `query` and compare the whole body with the oracle's answer."""
    response = world["client"].get("/v1/model-usage", query_string=query, headers=bearer(world["keys"][owner]))
    assert response.status_code == 200, response.get_json()
    expected = expected_body(EVENTS[owner], world["configs"][owner], world["prices"], date.fromisoformat(start),
                             date.fromisoformat(end), granularity, zone, config_id, period=period,
                             data_source=world["app"].config["DATA_SOURCE"])
    body = response.get_json()
    assert body == expected
    assert list(body["usageByModel"]) == list(expected["usageByModel"])
    assert_parts_agree(response)
    return body


# --- presets, defaults and custom ranges ----------------------------------------------------


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("period", PERIODS)
@pytest.mark.parametrize("now", list(NOWS))
def test_every_period_and_granularity_matches_the_oracle(world, pin, now, period, granularity):
    pin(now)
    start, end = PRESETS[now][period]
    for owner in CONFIGS:
        check(world, owner, {"period": period, "granularity": granularity}, start, end, granularity, period)


@pytest.mark.parametrize("now", list(NOWS))
def test_no_parameters_mean_the_last_7_days_by_day(world, pin, now):
    pin(now)
    start, end = PRESETS[now]["last_7_days"]
    body = check(world, "acme", {}, start, end, "day", "last_7_days")
    assert len(body["timeSeries"]) == 7


def test_period_alone_defaults_to_day_and_granularity_alone_to_the_last_7_days(world, pin):
    pin("mid_march")
    check(world, "acme", {"period": "last_month"}, "2026-02-01", "2026-02-28", "day", "last_month")
    check(world, "acme", {"granularity": "hour"}, "2026-03-12", "2026-03-18", "hour", "last_7_days")


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize(
    "start, end",
    [
        ("2026-02-20", "2026-03-18"),
        ("2025-12-15", "2026-01-05"),  # across a new year
        ("2024-02-27", "2024-03-02"),  # across a leap day
        ("2026-03-18", "2026-03-18"),  # one day
        ("2026-03-19", "2026-03-25"),  # after today: allowed, the future is simply empty
        ("2025-11-30", "2026-03-18"),
    ],
)
def test_custom_range_with_both_dates(world, pin, start, end, granularity):
    pin("mid_march")
    for owner in CONFIGS:
        check(world, owner, {"startDate": start, "endDate": end, "granularity": granularity},
              start, end, granularity, "custom")


@pytest.mark.parametrize("now, start", [("mid_march", "2026-02-27"), ("new_year", "2025-12-20"),
                                        ("leap_sunday", "2024-02-29"), ("monday", "2025-06-02")])
@pytest.mark.parametrize("granularity", ["day", "week"])
def test_only_start_date_runs_to_today(world, pin, now, start, granularity):
    today = pin(now)
    check(world, "acme", {"startDate": start, "granularity": granularity}, start, today.isoformat(), granularity, "custom")


@pytest.mark.parametrize("end, start", [("2026-03-18", "2026-03-12"), ("2026-01-03", "2025-12-28"),
                                        ("2024-03-01", "2024-02-24"), ("2030-01-01", "2029-12-26")])
def test_only_end_date_is_the_7_days_ending_there(world, pin, end, start):
    pin("mid_march")
    for granularity in GRANULARITIES:
        check(world, "acme", {"endDate": end, "granularity": granularity}, start, end, granularity, "custom")


# --- filters, buckets and edges -----------------------------------------------------------------


@pytest.mark.parametrize("owner, config_id", [(owner, config_id) for owner, items in CONFIGS.items()
                                              for config_id, _, _ in items])
@pytest.mark.parametrize("period, granularity", [("last_30_days", "day"), ("current_year", "week"), ("today", "hour")])
def test_model_config_filter_counts_only_that_config(world, pin, owner, config_id, period, granularity):
    pin("mid_march")
    start, end = PRESETS["mid_march"][period]
    check(world, owner, {"period": period, "granularity": granularity, "modelConfigId": config_id},
          start, end, granularity, period, config_id=config_id)


def test_filter_on_one_of_two_configs_of_a_model_keeps_the_other_out(world, pin):
    pin("mid_march")
    query = {"period": "current_year", "modelConfigId": "cfg_chat_eu"}
    eu = check(world, "acme", query, "2026-01-01", "2026-03-18", "day", "current_year", config_id="cfg_chat_eu")
    everything = check(world, "acme", {"period": "current_year"}, "2026-01-01", "2026-03-18", "day", "current_year")
    assert list(eu["usageByModel"]) == ["gpt-4o"]
    assert 0 < eu["usageByModel"]["gpt-4o"]["requestCount"] < everything["usageByModel"]["gpt-4o"]["requestCount"]


@pytest.mark.parametrize(
    "granularity, start, bucket_start",
    [("week", "2026-03-04", "2026-03-02"), ("month", "2026-02-15", "2026-02-01"), ("week", "2026-03-08", "2026-03-02")],
)
def test_bucket_starting_before_start_date_keeps_its_date_and_counts_only_the_range(world, pin, granularity, start,
                                                                                      bucket_start):
    pin("mid_march")
    body = check(world, "acme", {"startDate": start, "endDate": "2026-03-18", "granularity": granularity},
                 start, "2026-03-18", granularity, "custom")
    assert body["timeSeries"][0]["date"] == bucket_start
    # the same bucket seen from its true start holds more: the days before startDate were left out
    whole = expected_usage(EVENTS["acme"], world["configs"]["acme"], world["prices"], date.fromisoformat(bucket_start),
                           date(2026, 3, 18), granularity)
    assert whole["timeSeries"][0]["date"] == bucket_start
    assert whole["timeSeries"][0]["requests"] > body["timeSeries"][0]["requests"]


@pytest.mark.parametrize("zone, tag", [("UTC", "utc"), ("America/Los_Angeles", "la"), ("Asia/Kathmandu", "ktm")])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_events_on_the_range_edges(world, pin, zone, tag, granularity):
    """Local midnight of startDate is in, a microsecond before is out; likewise after endDate."""
    pin("mid_march")
    query = {"startDate": "2026-03-10", "endDate": "2026-03-12", "granularity": granularity, "timezone": zone,
             "modelConfigId": "cfg_edge"}
    body = check(world, "acme", query, "2026-03-10", "2026-03-12", granularity, "custom", zone, "cfg_edge")
    local = ZoneInfo(zone)
    inside = [e["id"] for e in EVENTS["acme"] if e["modelConfigId"] == "cfg_edge"
              and date(2026, 3, 10) <= datetime.fromisoformat(e["timestamp"]).astimezone(local).date() <= date(2026, 3, 12)]
    assert f"range-{tag}-first" in inside and f"range-{tag}-last" in inside
    assert f"range-{tag}-before" not in inside and f"range-{tag}-after" not in inside
    assert body["summary"]["totalRequests"] == len(inside)


def test_usage_by_model_is_ordered_by_total_cost(world, pin):
    pin("mid_march")
    body = check(world, "acme", {"period": "current_year"}, "2026-01-01", "2026-03-18", "day", "current_year")
    costs = [model["totalCost"] for model in body["usageByModel"].values()]
    assert len(set(costs)) == len(costs) >= 4
    assert costs == sorted(costs, reverse=True)
    assert all(model_id == model["modelId"] for model_id, model in body["usageByModel"].items())


def test_unpriced_usage_is_reported_in_meta(world, pin):
    pin("mid_march")
    body = check(world, "acme", {"period": "last_30_days", "modelConfigId": "cfg_custom"}, "2026-02-17",
                 "2026-03-18", "day", "last_30_days", config_id="cfg_custom")
    assert 1 <= body["meta"]["unpricedRequests"] < body["summary"]["totalRequests"]


def test_unpriced_requests_are_counted_per_model(world, pin):
    """Two unpriced models with different counts, priced models at 0: a count moved to
    another model, or left out, would show."""
    pin("mid_march")
    body = check(world, "acme", {"period": "last_7_days"}, "2026-03-12", "2026-03-18", "day", "last_7_days")
    unpriced = {model_id: model["unpricedRequests"] for model_id, model in body["usageByModel"].items()}
    # acme-lab-2: 2 hours and 2 days before now without a cost, 3 days before with one;
    # acme-finetune-1: 20 hours before now without a cost (its other events are out of range)
    assert unpriced == {"gpt-4o": 0, "claude-haiku-4-5": 0, "gemini-2.5-flash": 0, "acme-lab-2": 2, "acme-finetune-1": 1}
    assert body["usageByModel"]["acme-lab-2"]["requestCount"] == 3
    assert body["usageByModel"]["acme-finetune-1"]["requestCount"] == 1
    assert body["meta"]["unpricedRequests"] == 3


def test_empty_range_is_all_zeros(world, pin):
    pin("mid_march")
    body = check(world, "acme", {"startDate": "2001-01-01", "endDate": "2001-01-03"}, "2001-01-01", "2001-01-03",
                 "day", "custom")
    assert body["usageByModel"] == {}
    assert [point["date"] for point in body["timeSeries"]] == ["2001-01-01", "2001-01-02", "2001-01-03"]
    assert all(point["requests"] == point["tokens"] == point["cost"] == 0 for point in body["timeSeries"])


# --- the 400 rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, path",
    [
        ("foo=1", "foo"),
        ("start_date=2026-03-01", "start_date"),
        ("StartDate=2026-03-01", "StartDate"),
        ("limit=5", "limit"),
        ("granularity=day&granularity=day", "granularity"),
        ("period=today&period=yesterday", "period"),
        ("startDate=2026-03-01&startDate=2026-03-02", "startDate"),
        ("modelConfigId=cfg_chat&modelConfigId=cfg_chat", "modelConfigId"),
        ("startDate=2024-6-1", "startDate"),
        ("startDate=2024-06-1", "startDate"),
        ("startDate=2024-02-30", "startDate"),
        ("startDate=2023-02-29", "startDate"),
        ("startDate=2024-13-01", "startDate"),
        ("startDate=garbage", "startDate"),
        ("startDate=", "startDate"),
        ("startDate=2024-06-01T00:00:00Z", "startDate"),
        ("startDate=20240601", "startDate"),
        ("endDate=2024-6-1", "endDate"),
        ("endDate=2024-02-30", "endDate"),
        ("endDate=yesterday", "endDate"),
        ("period=last_week", "period"),
        ("period=", "period"),
        ("period=TODAY", "period"),
        ("period=custom", "period"),
        ("granularity=minute", "granularity"),
        ("granularity=", "granularity"),
        ("granularity=Day", "granularity"),
        ("period=today&startDate=2026-03-01", "period"),
        ("period=last_7_days&endDate=2026-03-01", "period"),
        ("period=last_month&startDate=2026-02-01&endDate=2026-02-28", "period"),
        ("startDate=2026-03-02&endDate=2026-03-01", "startDate"),
        ("startDate=2026-03-19", "startDate"),  # runs to today, which is before it
        ("modelConfigId=" + "a" * 65, "modelConfigId"),
        ("modelConfigId=bad%20id", "modelConfigId"),
        ("modelConfigId=cfg%2Fchat", "modelConfigId"),
        ("modelConfigId=cfg!", "modelConfigId"),
        ("modelConfigId=", "modelConfigId"),
        ("timezone=Mars/Olympus", "timezone"),
    ],
)
def test_invalid_query_is_a_400_naming_the_field(world, pin, query, path):
    pin("mid_march")
    response = world["client"].get(f"/v1/model-usage?{query}", headers=bearer(world["keys"]["acme"]))
    body = assert_error(response, 400, "invalid_request", path)
    assert all(item["code"] == item["code"].upper() for item in body["details"])
    sentence = body["error"].removeprefix(f"{path}: ")
    assert sentence[0].islower() and not sentence.endswith("."), body["error"]  # never "Unknown field."
    assert all(item["message"][0].islower() for item in body["details"]), body


@pytest.mark.parametrize("name", ["foo", "start_date", "limit"])
def test_an_unknown_parameter_is_told_the_accepted_ones(world, pin, name):
    pin("mid_march")
    response = world["client"].get(f"/v1/model-usage?{name}=1", headers=bearer(world["keys"]["acme"]))
    body = assert_error(response, 400, "invalid_request", name)
    assert body["error"] == f"{name}: is not an accepted query parameter"
    assert body["details"] == [{
        "code": "UNKNOWN_FIELD", "message": "is not an accepted query parameter", "path": name,
        "suggestion": "use one of: startDate, endDate, period, granularity, modelConfigId, timezone"}]


@pytest.mark.parametrize("config_id", ["cfg_missing", "cfg_edge", "a" * 64])
def test_config_not_owned_is_a_404_like_a_missing_one(world, pin, config_id):
    """globex asks for ids it does not have; acme owns cfg_edge: the answers must not differ."""
    pin("mid_march")
    client, key = world["client"], world["keys"]["globex"]
    response = client.get("/v1/model-usage", query_string={"modelConfigId": config_id}, headers=bearer(key))
    body = assert_error(response, 404, "not_found")
    missing = client.get("/v1/model-usage", query_string={"modelConfigId": "zz_missing"}, headers=bearer(key))
    assert json.dumps(body).replace(config_id, "ID") == json.dumps(missing.get_json()).replace("zz_missing", "ID")
    assert dict(response.headers) == dict(missing.headers) | {"Content-Length": response.headers["Content-Length"],
                                                             "X-Request-Id": response.headers["X-Request-Id"]}


@pytest.mark.parametrize(
    "granularity, start, end_ok, end_over, buckets",
    [
        ("day", "2000-01-01", "2027-05-18", "2027-05-19", 10_000),
        ("hour", "2026-01-01", "2027-02-20", "2027-02-21", 9_984),  # 416 days; one more day is 10,008
        ("week", "2000-01-03", "2191-08-28", "2191-08-29", 10_000),
        ("month", "1970-01-01", "2803-04-30", "2803-05-01", 10_000),
    ],
)
def test_bucket_cap(world, pin, granularity, start, end_ok, end_over, buckets):
    pin("mid_march")
    client, headers = world["client"], bearer(world["keys"]["acme"])
    assert (date.fromisoformat(end_over) - date.fromisoformat(end_ok)).days == 1
    ok = client.get("/v1/model-usage", headers=headers,
                    query_string={"startDate": start, "endDate": end_ok, "granularity": granularity})
    assert ok.status_code == 200
    series = ok.get_json()["timeSeries"]
    assert len(series) == buckets
    assert len({point["date"] for point in series}) == buckets
    over = client.get("/v1/model-usage", headers=headers,
                      query_string={"startDate": start, "endDate": end_over, "granularity": granularity})
    assert_error(over, 400, "invalid_request", "granularity")

