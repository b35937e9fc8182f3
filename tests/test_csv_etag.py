"""CSV answers (long format, exact amounts) and ETag / 304 polling on the usage endpoints."""
import csv
import io
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from conftest import assert_error, bearer, create_config, post_events
from oracle import event_cost_micros, expected_usage
from support import catalogue_prices
from usage_server import api

PRICES = {"gpt-4o": catalogue_prices()["gpt-4o"]}  # the catalogue's, as the oracle reads prices
CONFIGS = {  # two configs of one model, and a model without a catalogue price
    "cfg_a": ("gpt-4o", "OpenAI"),
    "cfg_a2": ("gpt-4o", "OpenAI"),
    "cfg_x": ("house-model", "Acme"),
}
CSV = {"Accept": "text/csv"}
USAGE_HEADER = ("date,modelId,provider,modelName,requests,unpricedRequests,totalTokens,"
                "platformTokens,userTokens,totalCost,platformCost,userCost,promptTokens,cachedPromptTokens,reasoningTokens")


def make_events(count=160, seed=7):
    """Events from 2026-02-26 to 2026-03-18 (a DST change in America/Los_Angeles on 03-08)."""
    rng = random.Random(seed)
    start = datetime(2026, 2, 26, tzinfo=timezone.utc)
    events = []
    for number in range(count):
        instant = start + timedelta(seconds=rng.randrange(21 * 86_400 - 1))
        event = {
            "id": f"ev-{number}",
            "timestamp": instant.isoformat().replace("+00:00", "Z"),
            "modelConfigId": rng.choice(sorted(CONFIGS)),
            "promptTokens": rng.randrange(5000),
            "completionTokens": rng.randrange(2000),
            "billingSource": rng.choice(["platform", "user"]),
            "executionTime": rng.randrange(10**7) / 10**6,
        }
        if rng.random() < 0.4:  # an explicit cost, to the micro-dollar
            event["cost"] = rng.randrange(10**8) / 10**6
        if rng.random() < 0.5:
            event["cachedPromptTokens"] = rng.randrange(event["promptTokens"] + 1)
        if rng.random() < 0.5:
            event["reasoningTokens"] = rng.randrange(event["completionTokens"] + 1)
        events.append(event)
    return events


@pytest.fixture
def seeded(client, make_key, frozen_now):
    key = make_key("acme")
    configs = {}
    for config_id, (model_id, provider) in CONFIGS.items():
        configs[config_id] = create_config(client, key, config_id, model_id, provider)
    events = make_events()
    for first in range(0, len(events), 50):
        post_events(client, key, events[first:first + 50])
    return key, configs, events


def micros(usd: float) -> int:
    return int(Decimal(repr(usd)) * 10**6)


def fixed6(value: int) -> str:
    return f"{Decimal(value) / 10**6:.6f}"


def expected_usage_csv(events, configs, start, end, granularity, zone, config_id=None):
    """The long-format CSV, from the oracle run on each (model, billing source, priced) slice."""
    whole = expected_usage(events, configs, PRICES, start, end, granularity, zone, config_id)
    model_of = {cid: configs[cid]["modelId"] for cid in configs}

    def series(predicate, tokens=None):
        """The oracle's points of the events chosen; `tokens`: the field they count as their tokens."""
        chosen = [e if tokens is None else {**e, "totalTokens": e.get(tokens, 0)} for e in events if predicate(e)]
        return expected_usage(chosen, configs, PRICES, start, end, granularity, zone, config_id)["timeSeries"]

    def unpriced(event):
        return not event_cost_micros({**event, "_model_id": model_of[event["modelConfigId"]]}, PRICES)[1]

    lines = [USAGE_HEADER]
    slices = {}
    for model_id in whole["usageByModel"]:
        of_model = lambda e, m=model_id: model_of[e["modelConfigId"]] == m  # noqa: E731
        slices[model_id] = (
            series(of_model),
            series(lambda e, f=of_model: f(e) and unpriced(e)),
            series(lambda e, f=of_model: f(e) and e["billingSource"] == "platform"),
            series(lambda e, f=of_model: f(e) and e["billingSource"] == "user"),
            series(of_model, "promptTokens"),
            series(of_model, "cachedPromptTokens"),
            series(of_model, "reasoningTokens"),
        )
    for index, point in enumerate(whole["timeSeries"]):
        for model_id, model in whole["usageByModel"].items():
            every, unpriced_only, platform, user, prompt, cached, reasoning = (s[index] for s in slices[model_id])
            platform_cost, user_cost = micros(platform["cost"]), micros(user["cost"])
            lines.append(",".join(map(str, [
                point["date"], model_id, model["provider"], model["modelName"], every["requests"],
                unpriced_only["requests"], every["tokens"], platform["tokens"], user["tokens"],
                fixed6(platform_cost + user_cost), fixed6(platform_cost), fixed6(user_cost),
                prompt["tokens"], cached["tokens"], reasoning["tokens"],
            ])))
    return "\r\n".join(lines) + "\r\n"


# --- CSV ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, start, end, granularity, zone, config_id",
    [
        ("period=last_7_days", date(2026, 3, 12), date(2026, 3, 18), "day", "UTC", None),
        ("startDate=2026-03-07&endDate=2026-03-09&granularity=hour&timezone=America/Los_Angeles",
         date(2026, 3, 7), date(2026, 3, 9), "hour", "America/Los_Angeles", None),
        ("startDate=2026-02-27&endDate=2026-03-18&granularity=week&timezone=Asia/Kathmandu",
         date(2026, 2, 27), date(2026, 3, 18), "week", "Asia/Kathmandu", None),
        ("period=current_year&granularity=month&timezone=Asia/Kolkata",
         date(2026, 1, 1), date(2026, 3, 18), "month", "Asia/Kolkata", None),
        ("period=last_30_days&modelConfigId=cfg_a2", date(2026, 2, 17), date(2026, 3, 18), "day", "UTC", "cfg_a2"),
        ("startDate=2026-03-01&endDate=2026-03-01&granularity=hour", date(2026, 3, 1), date(2026, 3, 1), "hour", "UTC", None),
    ],
)
def test_usage_csv_is_the_oracle_per_bucket_and_model(client, seeded, query, start, end, granularity, zone, config_id):
    key, configs, events = seeded
    response = client.get(f"/v1/model-usage?{query}", headers={**bearer(key), **CSV})
    assert response.status_code == 200
    assert response.content_type == "text/csv; charset=utf-8"
    assert response.get_data(as_text=True) == expected_usage_csv(events, configs, start, end, granularity, zone, config_id)
    scope = f"_{config_id}" if config_id else ""
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="model-usage{scope}_{start}_{end}_{granularity}.csv"')


def test_usage_csv_agrees_with_the_json_answer(client, seeded):
    """Summed per bucket the rows are the JSON time series; summed per model, usageByModel."""
    key, _, _ = seeded
    query = "/v1/model-usage?period=last_30_days&granularity=hour&timezone=America/Los_Angeles"
    body = client.get(query, headers=bearer(key)).get_json()
    rows = list(csv.DictReader(io.StringIO(client.get(query, headers={**bearer(key), **CSV}).get_data(as_text=True))))
    assert len(rows) == len(body["timeSeries"]) * len(body["usageByModel"])
    per_bucket, per_model = {}, {}
    for row in rows:
        point = per_bucket.setdefault(row["date"], [0, 0, Decimal(0)])
        model = per_model.setdefault(row["modelId"], [0, 0, Decimal(0)])
        for sums in (point, model):
            sums[0] += int(row["requests"])
            sums[1] += int(row["totalTokens"])
            sums[2] += Decimal(row["totalCost"])
        assert Decimal(row["totalCost"]) == Decimal(row["platformCost"]) + Decimal(row["userCost"])
        assert int(row["totalTokens"]) == int(row["platformTokens"]) + int(row["userTokens"])
    assert [[p["date"], p["requests"], p["tokens"], Decimal(repr(p["cost"]))] for p in body["timeSeries"]] == [
        [label, *sums] for label, sums in per_bucket.items()]
    assert [[m["modelId"], m["requestCount"], m["totalTokens"], Decimal(repr(m["totalCost"]))]
            for m in body["usageByModel"].values()] == [[model_id, *sums] for model_id, sums in per_model.items()]


def test_amounts_are_exact_decimals(client, make_key, frozen_now):
    key = make_key()
    create_config(client, key, "cfg_a")
    post_events(client, key, [
        {"id": "a", "timestamp": "2026-03-18T01:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 1, "completionTokens": 0, "cost": 0.1},
        {"id": "b", "timestamp": "2026-03-18T02:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 1, "completionTokens": 0, "cost": 0.2},
        {"id": "c", "timestamp": "2026-03-17T02:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 1, "completionTokens": 0,
         "cost": 999999.999999, "billingSource": "user", "executionTime": 0.000001},
    ])
    text = client.get("/v1/model-usage?period=yesterday&granularity=day", headers={**bearer(key), **CSV}).get_data(as_text=True)
    assert text == USAGE_HEADER + "\r\n2026-03-17,gpt-4o,OpenAI,gpt 4o,1,0,1,0,1,999999.999999,0.000000,999999.999999,1,0,0\r\n"
    text = client.get("/v1/model-usage?period=today", headers={**bearer(key), **CSV}).get_data(as_text=True)
    assert text == USAGE_HEADER + "\r\n2026-03-18,gpt-4o,OpenAI,gpt 4o,2,0,2,2,0,0.300000,0.300000,0.000000,2,0,0\r\n"
    text = client.get("/v1/model-usage/cfg_a?limit=1", headers={**bearer(key), **CSV}).get_data(as_text=True)
    assert text.splitlines()[1] == "b,2026-03-18T02:00:00Z,cfg_a,1,0,1,0.200000,,platform,true,sent,0,0,0"
    text = client.get("/v1/model-usage/cfg_a", headers={**bearer(key), **CSV}).get_data(as_text=True)
    assert text.splitlines()[3] == "c,2026-03-17T02:00:00Z,cfg_a,1,0,1,999999.999999,0.000001,user,true,sent,0,0,0"


def test_empty_range_is_the_header_alone(client, seeded):
    key, _, _ = seeded
    response = client.get("/v1/model-usage?startDate=2020-01-01&endDate=2020-01-31", headers={**bearer(key), **CSV})
    assert response.get_data(as_text=True) == USAGE_HEADER + "\r\n"


def test_details_csv_is_one_row_per_event_newest_first(client, seeded):
    key, configs, events = seeded
    mine = [e for e in events if e["modelConfigId"] == "cfg_x"]
    mine.sort(key=lambda e: (e["timestamp"], int(e["id"].split("-")[1])), reverse=True)
    response = client.get("/v1/model-usage/cfg_x?limit=7", headers={**bearer(key), **CSV})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="model-usage_cfg_x_recent.csv"'
    expected = ["id,timestamp,modelConfigId,promptTokens,completionTokens,totalTokens,estimatedCost,executionTime,billingSource,"
                "priced,priceSource,cachedPromptTokens,cacheWriteTokens,reasoningTokens"]
    for event in mine[:7]:
        cost, priced = event_cost_micros({**event, "_model_id": "house-model"}, PRICES)
        expected.append(",".join(map(str, [
            event["id"], event["timestamp"], "cfg_x", event["promptTokens"], event["completionTokens"],
            event["promptTokens"] + event["completionTokens"], fixed6(cost), fixed6(micros(event["executionTime"])),
            event["billingSource"], "true" if priced else "false",
            "sent" if "cost" in event else "none",  # house-model is in no catalogue
            event.get("cachedPromptTokens", 0), 0, event.get("reasoningTokens", 0),
        ])))
    assert response.get_data(as_text=True) == "\r\n".join(expected) + "\r\n"
    body = client.get("/v1/model-usage/cfg_x?limit=7", headers=bearer(key)).get_json()
    assert [item["id"] for item in body["recentUsage"]] == [event["id"] for event in mine[:7]]


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html", "text/csv, application/json",
                                    "application/json;q=0.9, */*;q=0.1"])
def test_json_stays_the_default(client, seeded, accept):
    key, _, _ = seeded
    headers = {**bearer(key), **({"Accept": accept} if accept else {})}
    for path in ("/v1/model-usage", "/v1/model-usage/cfg_a"):
        response = client.get(path, headers=headers)
        assert response.status_code == 200 and response.mimetype == "application/json"


@pytest.mark.parametrize("accept", ["text/csv", "text/*", "text/csv;q=0.9, application/json;q=0.5",
                                    "application/json;q=0.1, text/csv"])
def test_csv_when_accept_prefers_it(client, seeded, accept):
    key, _, _ = seeded
    for path in ("/v1/model-usage", "/v1/model-usage/cfg_a"):
        response = client.get(path, headers={**bearer(key), "Accept": accept})
        assert response.status_code == 200 and response.mimetype == "text/csv"


def test_errors_stay_json_when_csv_is_asked(client, seeded):
    key, _, _ = seeded
    assert_error(client.get("/v1/model-usage?granularity=year", headers={**bearer(key), **CSV}), 400, "invalid_request", "granularity")
    assert_error(client.get("/v1/model-usage/cfg_nope", headers={**bearer(key), **CSV}), 404, "not_found")
    assert_error(client.get("/v1/model-usage", headers=CSV), 401, "unauthorized")


# --- ETag and 304 ---------------------------------------------------------------------------


def get(client, key, path, tag=None, accept=None):
    headers = bearer(key)
    if tag is not None:
        headers["If-None-Match"] = tag
    if accept is not None:
        headers["Accept"] = accept
    return client.get(path, headers=headers)


PATHS = ["/v1/model-usage", "/v1/model-usage?period=last_30_days&granularity=hour&timezone=Asia/Kolkata",
         "/v1/model-usage/cfg_a", "/v1/model-usage/cfg_a?limit=3"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("accept", [None, "text/csv"])
def test_current_tag_gives_304_without_a_body(client, seeded, path, accept):
    key, _, _ = seeded
    first = get(client, key, path, accept=accept)
    assert first.status_code == 200
    tag = first.headers["ETag"]
    assert tag.startswith('"') and tag.endswith('"')
    assert set(first.vary) >= {"Accept", "Authorization"}
    again = get(client, key, path, tag, accept)
    assert again.status_code == 304
    assert again.get_data() == b""
    assert again.headers["ETag"] == tag
    for form in (f'"other", {tag}', f"W/{tag}", "*"):
        assert get(client, key, path, form, accept).status_code == 304
    assert get(client, key, path, '"other"', accept).get_data() == first.get_data()


@pytest.mark.parametrize("path", PATHS)
def test_tag_changes_as_soon_as_new_usage_is_stored(client, seeded, path):
    key, _, _ = seeded
    tag = get(client, key, path).headers["ETag"]
    post_events(client, key, [{"id": "new-1", "timestamp": "2026-03-18T12:00:00Z", "modelConfigId": "cfg_a",
                               "promptTokens": 10, "completionTokens": 1}])
    fresh = get(client, key, path, tag)
    assert fresh.status_code == 200
    assert fresh.headers["ETag"] != tag
    assert get(client, key, path, fresh.headers["ETag"]).status_code == 304


def test_tag_stays_when_nothing_new_is_stored(client, seeded, make_key):
    key, _, events = seeded
    tag = get(client, key, "/v1/model-usage").headers["ETag"]
    assert post_events(client, key, events[:3]) == {"accepted": 0, "duplicates": 3, "conflicts": 0}
    other = make_key("other")
    create_config(client, other, "cfg_a")
    post_events(client, other, [{"id": "o-1", "timestamp": "2026-03-18T12:00:00Z", "modelConfigId": "cfg_a",
                                 "promptTokens": 1, "completionTokens": 1}])
    assert get(client, key, "/v1/model-usage", tag).status_code == 304


def test_tags_differ_by_owner_even_at_the_same_version(client, make_key, frozen_now):
    one, two = make_key("one"), make_key("two")
    tag_one = get(client, one, "/v1/model-usage").headers["ETag"]
    tag_two = get(client, two, "/v1/model-usage").headers["ETag"]
    assert tag_one != tag_two
    assert get(client, two, "/v1/model-usage", tag_one).status_code == 200
    assert get(client, two, "/v1/model-usage", tag_two).status_code == 304


def test_tag_depends_on_every_resolved_parameter(client, seeded):
    key, _, _ = seeded
    variants = [
        ("/v1/model-usage", None),
        ("/v1/model-usage", "text/csv"),
        ("/v1/model-usage?granularity=hour", None),
        ("/v1/model-usage?granularity=week", None),
        ("/v1/model-usage?timezone=Asia/Kolkata", None),
        ("/v1/model-usage?modelConfigId=cfg_a", None),
        ("/v1/model-usage?startDate=2026-03-12&endDate=2026-03-18", None),  # last_7_days' range, but "custom"
        ("/v1/model-usage?period=last_30_days", None),
        ("/v1/model-usage/cfg_a", None),
        ("/v1/model-usage/cfg_a", "text/csv"),
        ("/v1/model-usage/cfg_a?limit=3", None),
        ("/v1/model-usage/cfg_a2", None),
    ]
    tags = [get(client, key, path, accept=accept).headers["ETag"] for path, accept in variants]
    assert len(set(tags)) == len(variants)
    # the same resolved request written differently is the same answer, and the same tag
    assert get(client, key, "/v1/model-usage?period=last_7_days&granularity=day&timezone=UTC").headers["ETag"] == tags[0]


def test_today_moving_on_changes_the_tag_of_relative_periods(client, seeded, monkeypatch):
    key, _, _ = seeded
    relative = get(client, key, "/v1/model-usage?period=last_7_days").headers["ETag"]
    fixed = get(client, key, "/v1/model-usage?startDate=2026-03-12&endDate=2026-03-18").headers["ETag"]
    later = api.utc_now() + timedelta(hours=1)
    monkeypatch.setattr(api, "utc_now", lambda: later)  # still the same day
    assert get(client, key, "/v1/model-usage?period=last_7_days", relative).status_code == 304
    next_day = api.utc_now() + timedelta(hours=12)
    monkeypatch.setattr(api, "utc_now", lambda: next_day)
    moved = get(client, key, "/v1/model-usage?period=last_7_days", relative)
    assert moved.status_code == 200 and moved.get_json()["meta"]["startDate"] == "2026-03-13"
    assert get(client, key, "/v1/model-usage?startDate=2026-03-12&endDate=2026-03-18", fixed).status_code == 304


def test_no_key_no_304(client, seeded):
    key, _, _ = seeded
    tag = get(client, key, "/v1/model-usage").headers["ETag"]
    assert_error(client.get("/v1/model-usage", headers={"If-None-Match": tag}), 401, "unauthorized")
