"""Token details (cachedPromptTokens, cacheWriteTokens, reasoningTokens): validated, stored,
summed and answered on both engines; events sent before them keep their fingerprints; the
migration that adds them fills the rollups of a database's stored events."""
import dataclasses
import importlib.util
import random
import re
import shutil
from datetime import date, datetime
from pathlib import Path

import pytest

from conftest import FROZEN_NOW, assert_error, bearer, create_config, post_events
from oracle import expected_usage
from support import assert_rollups_equal_a_rebuild, catalogue_names, catalogue_prices
from test_migrations import RECORDED, RELEASE_0_1_0, start
from usage_server import api, create_app
from usage_server.auth import create_key
from usage_server.ingest import NewEvent
from usage_server.storage import connect, migrations, write_transaction
from usage_server.storage.connections import engine_of

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EVENT = {"id": "ev-1", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a",
         "promptTokens": 100, "completionTokens": 20}
DETAILS = ("cachedPromptTokens", "cacheWriteTokens", "reasoningTokens")


def post(client, key, events):
    return client.post("/v1/model-usage/events", json={"events": events}, headers=bearer(key))


@pytest.fixture
def writer(client, make_key, frozen_now):
    key = make_key()
    create_config(client, key, "cfg_a")
    return key


@pytest.fixture
def release_copy(tmp_path) -> Path:
    """A copy of the database made by release 0.1.0 (the committed file is only ever read)."""
    path = tmp_path / "usage.sqlite"
    shutil.copyfile(RELEASE_0_1_0, path)
    return path


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("details, path, code", [
    ({"cachedPromptTokens": 101}, "cachedPromptTokens", "TOKENS_EXCEED_PROMPT"),
    ({"cacheWriteTokens": 101}, "cacheWriteTokens", "TOKENS_EXCEED_PROMPT"),  # only it given: named
    ({"cachedPromptTokens": 60, "cacheWriteTokens": 41}, "cachedPromptTokens", "TOKENS_EXCEED_PROMPT"),
    ({"cachedPromptTokens": 0, "cacheWriteTokens": 101}, "cachedPromptTokens", "TOKENS_EXCEED_PROMPT"),
    ({"reasoningTokens": 21}, "reasoningTokens", "TOKENS_EXCEED_COMPLETION"),
    ({"cachedPromptTokens": -1}, "cachedPromptTokens", "OUT_OF_RANGE"),
    ({"cacheWriteTokens": 10**12 + 1}, "cacheWriteTokens", "OUT_OF_RANGE"),
    ({"reasoningTokens": 2**64}, "reasoningTokens", "OUT_OF_RANGE"),
    ({"cachedPromptTokens": "5"}, "cachedPromptTokens", "INVALID_TYPE"),
    ({"cacheWriteTokens": True}, "cacheWriteTokens", "INVALID_TYPE"),
    ({"reasoningTokens": 1.5}, "reasoningTokens", "INVALID_TYPE"),
    ({"reasoningTokens": None}, "reasoningTokens", "INVALID_TYPE"),
])
def test_a_detail_out_of_its_rule_is_a_400_naming_it_and_stores_nothing(client, writer, details, path, code):
    good = dict(EVENT, id="ev-0")
    body = assert_error(post(client, writer, [good, {**EVENT, **details}]), 400, "invalid_request", f"events.1.{path}")
    detail = next(item for item in body["details"] if item["path"] == f"events.1.{path}")
    assert detail["code"] == code
    assert "suggestion" in detail or not code.startswith("TOKENS")
    assert body["error"].startswith(f"events.1.{path}: ")
    assert client.get("/v1/model-usage/cfg_a", headers=bearer(writer)).get_json()["recentUsage"] == []


def test_both_rules_broken_are_both_named(client, writer):
    body = assert_error(post(client, writer, [{**EVENT, "cachedPromptTokens": 101, "reasoningTokens": 21}]), 400)
    assert body["details"] == [
        {"code": "TOKENS_EXCEED_PROMPT", "path": "events.0.cachedPromptTokens",
         "message": "cachedPromptTokens + cacheWriteTokens (101) must not exceed promptTokens (100)",
         "suggestion": "count every input token in promptTokens, cached or not"},
        {"code": "TOKENS_EXCEED_COMPLETION", "path": "events.0.reasoningTokens",
         "message": "reasoningTokens (21) must not exceed completionTokens (20)",
         "suggestion": "count reasoning tokens in completionTokens too"},
    ]


def test_details_at_their_limits_are_stored_and_answered(client, writer):
    events = [{**EVENT, "cachedPromptTokens": 70, "cacheWriteTokens": 30, "reasoningTokens": 20},
              {**EVENT, "id": "ev-2", "promptTokens": 0, "completionTokens": 0, "cachedPromptTokens": 0},
              {**EVENT, "id": "ev-3", "cacheWriteTokens": 100},
              {**EVENT, "id": "ev-4"}]
    assert post_events(client, writer, events) == {"accepted": 4, "duplicates": 0, "conflicts": 0}
    recent = {item["id"]: tuple(item[name] for name in DETAILS)
              for item in client.get("/v1/model-usage/cfg_a", headers=bearer(writer)).get_json()["recentUsage"]}
    assert recent == {"ev-1": (70, 30, 20), "ev-2": (0, 0, 0), "ev-3": (0, 100, 0), "ev-4": (0, 0, 0)}
    body = client.get("/v1/model-usage?period=today", headers=bearer(writer)).get_json()
    assert {name: body["summary"][name] for name in ("promptTokens", "cachedPromptTokens", "reasoningTokens")} == {
        "promptTokens": 300, "cachedPromptTokens": 70, "reasoningTokens": 20}
    assert (body["usageByModel"]["gpt-4o"]["promptTokens"], body["usageByModel"]["gpt-4o"]["cachedPromptTokens"]) == (300, 70)


def test_the_oracle_agrees_per_model_on_every_granularity_and_zone(client, writer, frozen_now):
    """Two models, details on some events: summary and usageByModel as the oracle sums them."""
    create_config(client, writer, "cfg_h", "claude-haiku-4-5", "Anthropic")
    rng = random.Random(11)
    events = []
    for number in range(120):
        prompt, completion = rng.randrange(0, 3000), rng.randrange(0, 800)
        event = {"id": f"t{number}", "timestamp": f"2026-03-{rng.randrange(10, 19):02d}T{rng.randrange(24):02d}:"
                                                  f"{rng.randrange(60):02d}:00+05:45",
                 "modelConfigId": rng.choice(["cfg_a", "cfg_h"]), "promptTokens": prompt, "completionTokens": completion}
        if rng.random() < 0.7:
            event["cachedPromptTokens"] = rng.randrange(prompt + 1)
            event["cacheWriteTokens"] = rng.randrange(prompt - event["cachedPromptTokens"] + 1)
        if rng.random() < 0.5:
            event["reasoningTokens"] = rng.randrange(completion + 1)
        events.append(event)
    post_events(client, writer, events)
    names = catalogue_names()
    configs = {"cfg_a": {"modelId": "gpt-4o", "provider": "OpenAI", "modelName": names["gpt-4o"]},
               "cfg_h": {"modelId": "claude-haiku-4-5", "provider": "Anthropic", "modelName": names["claude-haiku-4-5"]}}
    for granularity in ("hour", "day", "week", "month"):
        for zone in ("UTC", "Asia/Kathmandu", "America/Los_Angeles"):
            query = f"startDate=2026-03-11&endDate=2026-03-17&granularity={granularity}&timezone={zone}"
            body = client.get(f"/v1/model-usage?{query}", headers=bearer(writer)).get_json()
            expected = expected_usage(events, configs, catalogue_prices(), date(2026, 3, 11), date(2026, 3, 17),
                                      granularity, zone)
            assert body["summary"] == expected["summary"], query
            assert body["usageByModel"] == expected["usageByModel"], query
            assert body["summary"]["cachedPromptTokens"] > 0 and body["summary"]["reasoningTokens"] > 0


# --- fingerprints ---------------------------------------------------------------------------------


def test_an_event_without_details_keeps_the_fingerprint_of_earlier_releases():
    """The value the fingerprint had before the details existed (computed by that code)."""
    event = NewEvent(event_id="ev-1", ts_us=1_773_828_000_000_000, config_id="cfg_a", prompt_tokens=100,
                     completion_tokens=20, total_tokens=120, cost_micros=None, execution_us=1_500_000,
                     billing_source="platform")
    assert event.fingerprint() == 5_493_890_094_693_489_850
    assert dataclasses.replace(event, reasoning_tokens=0).fingerprint() == event.fingerprint()
    for detail in ("cached_prompt_tokens", "cache_write_tokens", "reasoning_tokens"):
        assert dataclasses.replace(event, **{detail: 1}).fingerprint() != event.fingerprint()


def test_resending_with_or_without_details(client, writer):
    plain, detailed = dict(EVENT, id="plain"), dict(EVENT, id="detailed", cachedPromptTokens=40, reasoningTokens=5)
    post_events(client, writer, [plain, detailed])
    assert post_events(client, writer, [dict(plain, cachedPromptTokens=0, cacheWriteTokens=0, reasoningTokens=0),
                                        detailed]) == {"accepted": 0, "duplicates": 2, "conflicts": 0}
    without_reasoning = {name: value for name, value in detailed.items() if name != "reasoningTokens"}
    assert post_events(client, writer, [dict(plain, cachedPromptTokens=1), dict(detailed, cachedPromptTokens=41),
                                        without_reasoning]) == {"accepted": 0, "duplicates": 3, "conflicts": 3}


def fixture_events(owner: str) -> list[dict]:
    """The events release 0.1.0's fixture sent, made again by its own generator."""
    spec = importlib.util.spec_from_file_location("make_release_0_1_0", FIXTURES / "make_release_0_1_0.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    rng = random.Random(2026)  # as its main() draws them: every owner in turn
    made = {name: maker.events(name, maker.EVENTS[name], rng) for name in maker.CONFIGS}
    return made[owner]


@pytest.mark.sqlite_only  # the fixture is an SQLite file
def test_events_of_release_0_1_0_sent_again_after_the_upgrade_are_duplicates_not_conflicts(release_copy):
    client = start(release_copy).test_client()
    events = fixture_events("acme")
    assert len(events) == 400
    key = bearer(RECORDED["keys"]["acme"])
    for first in range(0, 400, 100):
        response = client.post("/v1/model-usage/events", json={"events": events[first:first + 100]}, headers=key)
        assert response.get_json() == {"accepted": 0, "duplicates": 100, "conflicts": 0}
    changed = [dict(events[0], cachedPromptTokens=events[0]["promptTokens"])]
    response = client.post("/v1/model-usage/events", json={"events": changed}, headers=key)
    assert response.get_json() == {"accepted": 0, "duplicates": 1, "conflicts": 1}


# --- the migration --------------------------------------------------------------------------------


def this_step(engine: str) -> tuple[int, Path]:
    return next((version, path) for version, path in migrations.steps(engine) if path.stem.endswith("_tokens"))


@pytest.mark.sqlite_only
def test_the_upgrade_of_release_0_1_0_sums_its_prompt_tokens_into_every_rollup(release_copy, monkeypatch):
    monkeypatch.setattr(api, "utc_now", lambda: datetime.fromisoformat(RECORDED["now"]))
    app = start(release_copy)
    conn = connect(app.config)
    try:
        assert assert_rollups_equal_a_rebuild(conn) == [19_800]
        prompt = conn.execute("SELECT SUM(prompt_tokens) FROM usage_event").fetchone()[0]
        assert prompt > 0
        for table in ("rollup_quarter", "rollup_week", "rollup_local_week", "rollup_local_hour"):
            sums = conn.execute(f"SELECT SUM(prompt_tokens), SUM(cached_prompt_tokens), SUM(reasoning_tokens) "
                                f"FROM {table} WHERE owner_id IN (SELECT id FROM owner)").fetchone()
            assert tuple(sums) == (prompt, 0, 0), table
    finally:
        conn.close()
    body = app.test_client().get("/v1/model-usage?startDate=2025-12-01&endDate=2026-03-31&timezone=Asia/Kolkata",
                                 headers=bearer(RECORDED["keys"]["acme"])).get_json()
    sent = fixture_events("acme")
    assert body["summary"]["promptTokens"] == sum(event["promptTokens"] for event in sent)
    assert (body["summary"]["cachedPromptTokens"], body["summary"]["reasoningTokens"]) == (0, 0)


def test_the_step_fills_the_rollups_of_the_events_a_database_holds(engine, database, monkeypatch):
    """A database whose events were stored before the step (its columns dropped again): after the
    step every rollup equals its events summed again, and every answer is what it was."""
    version, path = this_step(engine)
    monkeypatch.setattr(api, "utc_now", lambda: FROZEN_NOW)
    fast = {"TESTING": True, "DATABASE": database, "FAST_TIMEZONES": "Asia/Kathmandu,America/Los_Angeles"}
    app = create_app(fast)
    conn = connect(app.config)
    with write_transaction(conn):
        key = create_key(conn, "acme", ["read", "write"])[1]
    client = app.test_client()
    create_config(client, key, "cfg_a")
    create_config(client, key, "cfg_h", "claude-haiku-4-5", "Anthropic")
    rng = random.Random(3)
    post_events(client, key, [{"id": f"e{n}", "timestamp": f"2026-03-{rng.randrange(1, 19):02d}T{rng.randrange(24):02d}"
                                                          f":{rng.randrange(60):02d}:07Z",
                               "modelConfigId": rng.choice(["cfg_a", "cfg_h"]), "promptTokens": rng.randrange(5000),
                               "completionTokens": rng.randrange(900)} for n in range(300)])
    queries = ["startDate=2026-03-01&endDate=2026-03-18&granularity=" + grain + "&timezone=" + zone
               for grain in ("hour", "day", "week", "month") for zone in ("UTC", "Asia/Kathmandu", "America/Los_Angeles")]
    before = [client.get(f"/v1/model-usage?{query}", headers=bearer(key)).get_json() for query in queries]
    assert before[0]["summary"]["promptTokens"] > 0
    # back to the step before: its columns dropped; then the step itself
    added = re.findall(r"ALTER TABLE (\w+)\s+((?:ADD COLUMN \w+[^;]*?)+);", path.read_text())
    with write_transaction(conn):
        for table, clauses in added:
            for column in re.findall(r"ADD COLUMN (\w+)", clauses):
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    with write_transaction(conn):
        engine_of(conn).run_script(conn, path.read_text())
    try:
        assert assert_rollups_equal_a_rebuild(conn) == [-28_800, -25_200, 19_800, 20_700]
    finally:
        conn.close()
    client = app.test_client()
    assert [client.get(f"/v1/model-usage?{query}", headers=bearer(key)).get_json() for query in queries] == before


# --- the API description --------------------------------------------------------------------------


def test_the_openapi_description_shows_the_details_in_and_out(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    for name in DETAILS:
        assert {key: schemas["Event"]["properties"][name][key] for key in ("type", "minimum", "maximum", "default")} == {
            "type": "integer", "minimum": 0, "maximum": 10**12, "default": 0}
        assert schemas["RecentUsage"]["properties"][name]["type"] == "integer"
    assert {"cachedPromptTokens", "reasoningTokens", "promptTokens"} <= set(schemas["UsageSummary"]["properties"])
    assert {"cachedPromptTokens", "promptTokens"} <= set(schemas["ModelUsage"]["properties"])
    assert "cachedPromptTokens ÷ promptTokens" in schemas["UsageSummary"]["properties"]["promptTokens"]["description"]
