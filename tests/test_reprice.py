"""`usage-server reprice`: events sent without a cost priced again with the prices in effect
now, their rollups corrected in the same transactions, on both engines; every report is
then still the oracle's exact sum, sent costs never change. And the classification of
events stored before priceSource existed (the release 0.1.0 fixture)."""
import json
import random
import shutil
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import bearer
from oracle import event_cost_micros, expected_body
from support import assert_rollups_equal_a_rebuild, catalogue_prices, open_database, rows
from usage_server import create_app, repricing
from usage_server.ingest import rebuild_rollups
from usage_server.storage import migrations, write_transaction

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_release_0_1_0 as release_0_1_0  # noqa: E402  (its event generator, to know what was sent)

START, END = date(2026, 2, 1), date(2026, 3, 17)
CONFIGS = {
    "acme": {"cfg_gpt": ("gpt-4o", "OpenAI"), "cfg_mini": ("gpt-4o-mini", "OpenAI"), "cfg_lab": ("acme-lab-2", "Acme")},
    "globex": {"cfg_gpt": ("gpt-4o", "OpenAI")},
}
OVERRIDES = {"gpt-4o": ("3", "11"), "acme-lab-2": ("0.5", "1.5")}  # USD per million tokens
OVERRIDE_FILE = {"models": [{"modelId": model_id, "provider": "X", "promptPerMillion": prompt, "completionPerMillion": completion}
                            for model_id, (prompt, completion) in OVERRIDES.items()]}
QUERIES = [("day", "UTC"), ("hour", "Asia/Kolkata"), ("week", "America/Los_Angeles"), ("month", "Asia/Kolkata")]


def make_events(owner: str, count: int, rng: random.Random) -> list[dict]:
    span = int((datetime.combine(END, datetime.min.time()) - datetime.combine(START, datetime.min.time())).total_seconds())
    made = []
    for n in range(count):
        instant = datetime(2026, 2, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(span + 86_399))
        event = {"id": f"{owner}-{n}", "timestamp": instant.isoformat(), "modelConfigId": rng.choice(list(CONFIGS[owner])),
                 "promptTokens": rng.randrange(5_000), "completionTokens": rng.randrange(2_000)}
        if rng.random() < 0.3:
            event["billingSource"] = "user"
        if rng.random() < 0.25:
            event["cost"] = rng.randrange(10**6) / 10**6
        made.append(event)
    return made


@pytest.fixture
def world(database, tmp_path):
    app = create_app({"TESTING": True, "DATABASE": database, "FAST_TIMEZONES": "Asia/Kolkata,America/Los_Angeles"})
    client, runner = app.test_client(), app.test_cli_runner()
    rng, keys, events, configs = random.Random(5), {}, {}, {}
    for owner in CONFIGS:
        keys[owner] = runner.invoke(args=["create-key", owner]).output.rstrip("\n").split("\n")[-1]
        configs[owner] = {}
        for config_id, (model_id, provider) in CONFIGS[owner].items():
            response = client.post("/v1/model-configs", headers=bearer(keys[owner]),
                                   json={"id": config_id, "modelId": model_id, "provider": provider})
            assert response.status_code == 201
            configs[owner][config_id] = response.get_json()
        events[owner] = make_events(owner, 400 if owner == "acme" else 120, rng)
        response = client.post("/v1/model-usage/events", headers=bearer(keys[owner]), json={"events": events[owner]})
        assert response.get_json()["accepted"] == len(events[owner])
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps(OVERRIDE_FILE))
    return {"app": app, "client": client, "runner": runner, "keys": keys, "events": events, "configs": configs,
            "overrides": str(overrides), "database": database}


def as_priced(events, configs, repriced) -> list[dict]:
    """The events as the oracle should see them: those in `repriced` priced by the overrides,
    written as if sent with that cost (the oracle then counts them priced, to the micro-dollar)."""
    expected = []
    for event in events:
        model_id = configs[event["modelConfigId"]]["modelId"]
        if event["id"] in repriced:
            micros, _ = event_cost_micros({**event, "_model_id": model_id}, OVERRIDES)
            event = {**event, "cost": str(Decimal(micros) / 10**6)}
        expected.append(event)
    return expected


def assert_reports(world, owner, events):
    client, key = world["client"], world["keys"][owner]
    for granularity, zone in QUERIES:
        query = {"startDate": START.isoformat(), "endDate": END.isoformat(), "granularity": granularity, "timezone": zone}
        body = client.get("/v1/model-usage", query_string=query, headers=bearer(key)).get_json()
        assert body == expected_body(events, world["configs"][owner], catalogue_prices(), START, END, granularity, zone,
                                     data_source=world["app"].config["DATA_SOURCE"]), (owner, granularity, zone)
    with open_database(world["database"]) as conn:
        assert assert_rollups_equal_a_rebuild(conn)  # local rollups too: offsets are registered


def details(world, owner) -> dict:
    found = {}
    for config_id in CONFIGS[owner]:
        body = world["client"].get(f"/v1/model-usage/{config_id}?limit=1000", headers=bearer(world["keys"][owner])).get_json()
        found.update({item["id"]: (item["estimatedCost"], item["priceSource"]) for item in body["recentUsage"]})
    return found


def reprice_ids(world, owner, since=None) -> set[str]:
    """Which events a reprice changes: no cost sent, on or after `since`, a model now overridden."""
    return {event["id"] for event in world["events"][owner]
            if "cost" not in event and world["configs"][owner][event["modelConfigId"]]["modelId"] in OVERRIDES
            and (since is None or datetime.fromisoformat(event["timestamp"]).date() >= since)}


def money(world, owner, ids, prices) -> int:
    return sum(event_cost_micros({**event, "_model_id": world["configs"][owner][event["modelConfigId"]]["modelId"]},
                                 prices)[0] for event in world["events"][owner] if event["id"] in ids)


def fixed(micros: int) -> str:
    return f"{micros // 10**6}.{micros % 10**6:06d}"


def test_reprice_applies_new_prices_to_unsent_costs_with_their_rollups(world, monkeypatch):
    for owner in CONFIGS:
        assert_reports(world, owner, world["events"][owner])
    before = {owner: details(world, owner) for owner in CONFIGS}
    etags = {owner: world["client"].get("/v1/model-usage", headers=bearer(world["keys"][owner])).headers["ETag"]
             for owner in CONFIGS}
    assert world["runner"].invoke(args=["import-prices", world["overrides"]]).exit_code == 0
    # nothing stored changes until a reprice
    assert {owner: details(world, owner) for owner in CONFIGS} == before

    since = date(2026, 3, 1)
    changed = reprice_ids(world, "acme", since)
    was, now = money(world, "acme", changed, catalogue_prices()), money(world, "acme", changed, OVERRIDES)
    assert len(changed) > 50 and now > was
    monkeypatch.setattr(repricing, "BATCH", 7)  # many pages, each its own transaction
    pages, page = [], repricing.reprice_page
    monkeypatch.setattr(repricing, "reprice_page", lambda *args: pages.append(args[3]) or page(*args))
    result = world["runner"].invoke(args=["reprice", "--owner", "acme", "--since", since.isoformat()])
    assert result.exit_code == 0, result.output
    examined = sum(1 for event in world["events"]["acme"]
                   if "cost" not in event and datetime.fromisoformat(event["timestamp"]).date() >= since)
    assert set(pages) == {7} and len(pages) >= examined / 7
    assert result.output == (f"Repriced {len(changed):,} of {examined:,} events sent without a cost: "
                             f"+${fixed(now - was)} (from ${fixed(was)} to ${fixed(now)}).\n")

    assert_reports(world, "acme", as_priced(world["events"]["acme"], world["configs"]["acme"], changed))
    assert_reports(world, "globex", world["events"]["globex"])
    after = details(world, "acme")
    for event in world["events"]["acme"]:
        if event["id"] in changed:
            assert after[event["id"]][1] == "override"
        else:  # sent costs, earlier events and models without an override: as they were
            assert after[event["id"]] == before["acme"][event["id"]]
    assert details(world, "globex") == before["globex"]
    assert world["client"].get("/v1/model-usage", headers=bearer(world["keys"]["acme"])).headers["ETag"] != etags["acme"]
    assert world["client"].get("/v1/model-usage", headers=bearer(world["keys"]["globex"])).headers["ETag"] == etags["globex"]

    # everyone, every day; then once more: nothing left to change
    result = world["runner"].invoke(args=["reprice"])
    assert result.exit_code == 0, result.output
    rest = {owner: reprice_ids(world, owner) - (changed if owner == "acme" else set()) for owner in CONFIGS}
    assert result.output.startswith(f"Repriced {sum(map(len, rest.values())):,} of ")
    for owner in CONFIGS:
        assert_reports(world, owner, as_priced(world["events"][owner], world["configs"][owner], reprice_ids(world, owner)))
    again = world["runner"].invoke(args=["reprice"])
    assert again.output.startswith("Repriced 0 of ") and "+$0.000000 (from $0.000000 to $0.000000)" in again.output


def test_an_unpriced_model_becomes_priced_and_leaves_the_unpriced_count(world):
    lab = [event for event in world["events"]["acme"] if event["modelConfigId"] == "cfg_lab" and "cost" not in event]
    query = {"startDate": START.isoformat(), "endDate": END.isoformat()}
    body = world["client"].get("/v1/model-usage", query_string=query, headers=bearer(world["keys"]["acme"])).get_json()
    assert body["usageByModel"]["acme-lab-2"]["unpricedRequests"] == len(lab) > 0
    world["runner"].invoke(args=["import-prices", world["overrides"]])
    assert world["runner"].invoke(args=["reprice"]).exit_code == 0
    body = world["client"].get("/v1/model-usage", query_string=query, headers=bearer(world["keys"]["acme"])).get_json()
    assert body["meta"]["unpricedRequests"] == 0


def test_reprice_refuses_an_unknown_owner_and_a_bad_date(world):
    result = world["runner"].invoke(args=["reprice", "--owner", "nobody"])
    assert result.exit_code == 1 and "no owner named 'nobody'" in result.output
    assert world["runner"].invoke(args=["reprice", "--since", "2026-13-01"]).exit_code == 2


# --- events stored before priceSource ----------------------------------------------------------


@pytest.mark.sqlite_only
def test_events_of_release_0_1_0_are_classified_and_only_unsent_ones_repriced(tmp_path):
    path = tmp_path / "usage.sqlite"
    shutil.copyfile(FIXTURES / "release-0.1.0.sqlite", path)
    rng, sent, unpriced = random.Random(2026), set(), set()
    for owner, configs in release_0_1_0.CONFIGS.items():
        for event in release_0_1_0.events(owner, release_0_1_0.EVENTS[owner], rng):
            if "cost" in event:
                sent.add(event["id"])
            elif event["modelConfigId"] == "cfg_ft":
                unpriced.add(event["id"])
    app = create_app({"TESTING": True, "DATABASE": str(path), "FAST_TIMEZONES": release_0_1_0.FAST_TIMEZONES})
    with open_database(path) as conn:
        stored = dict(rows(conn, "SELECT event_id, price_source FROM usage_event"))
        assert rows(conn, "SELECT * FROM model") == []  # every row was a default of that release
        costs = dict(rows(conn, "SELECT event_id, cost_micros FROM usage_event"))
    assert len(stored) == 450 and sent and unpriced
    assert stored == {event_id: 1 if event_id in sent else 0 if event_id in unpriced else 3 for event_id in stored}
    # the catalogue's prices for these models are the defaults': a reprice changes nothing
    result = app.test_cli_runner().invoke(args=["reprice"])
    assert result.output.startswith(f"Repriced 0 of {450 - len(sent):,} events")
    with open_database(path) as conn:
        assert dict(rows(conn, "SELECT event_id, cost_micros FROM usage_event")) == costs
        assert_rollups_equal_a_rebuild(conn)


def test_the_upgrade_classifies_stored_events_and_keeps_only_the_operators_prices(database, monkeypatch):
    """A database at schema version 1 (the release before priceSource), on either engine: default
    rows of the old hand-kept list go, imported ones stay; events are classified by what is stored."""
    steps = migrations.steps
    monkeypatch.setattr(migrations, "steps", lambda engine="sqlite": steps(engine)[:1])
    monkeypatch.setattr(migrations, "LATEST_VERSION", 1)
    create_app({"TESTING": True, "DATABASE": database})
    with open_database(database) as conn, write_transaction(conn):
        conn.execute("INSERT INTO owner (name, created_at) VALUES ('acme', '2026-03-18T00:00:00Z')")
        owner_id = conn.execute("SELECT id FROM owner").fetchone()[0]
        conn.executemany("INSERT INTO model (model_id, provider, display_name, prompt_micros_per_mtok, "
                         "completion_micros_per_mtok) VALUES (?, ?, ?, ?, ?)", [
                             ("gpt-4o", "OpenAI", "GPT-4o", 2_500_000, 10_000_000),  # a default, untouched
                             ("gpt-4o-mini", "OpenAI", "Mini (ours)", 150_000, 600_000),  # renamed: imported
                             ("acme-1", "Acme", "acme-1", 1_000_000, 2_000_000)])  # imported
        series = {}
        for model_id in ("gpt-4o", "gpt-4o-mini", "acme-1"):
            conn.execute("INSERT INTO usage_series (owner_id, config_id, model_id, provider, model_name) "
                         "VALUES (?, ?, ?, 'X', ?)", (owner_id, f"cfg-{model_id}", model_id, model_id))
            series[model_id] = conn.execute("SELECT id FROM usage_series WHERE model_id = ?", (model_id,)).fetchone()[0]
        conn.executemany("INSERT INTO usage_event (owner_id, event_id, ts_us, series_id, prompt_tokens, "
                         "completion_tokens, total_tokens, cost_micros, priced, execution_us, billing_source, "
                         "fingerprint) VALUES (?, ?, 1773800000000000, ?, 1000, 100, 1100, ?, ?, NULL, 'platform', 7)", [
                             (owner_id, "listed", series["gpt-4o"], 3_500, 1),  # 1000 * 2.5 + 100 * 10
                             (owner_id, "sent", series["gpt-4o"], 1_234, 1),
                             (owner_id, "unpriced", series["gpt-4o"], 0, 0),
                             (owner_id, "mini", series["gpt-4o-mini"], 210, 1),  # 1000 * 0.15 + 100 * 0.6
                             (owner_id, "imported", series["acme-1"], 1_200, 1),  # 1000 * 1 + 100 * 2
                             (owner_id, "sent-acme", series["acme-1"], 7, 1)])
    monkeypatch.undo()
    with open_database(database) as conn:
        migrations.migrate(conn, rebuild_rollups)
        assert dict(rows(conn, "SELECT event_id, price_source FROM usage_event")) == {
            "listed": 3, "sent": 1, "unpriced": 0, "mini": 2, "imported": 2, "sent-acme": 1}
        assert sorted(rows(conn, "SELECT model_id, display_name, cache_read_micros_per_mtok FROM model")) == [
            ("acme-1", "acme-1", None), ("gpt-4o-mini", "Mini (ours)", None)]
        assert dict(rows(conn, "SELECT event_id, cost_micros FROM usage_event"))["listed"] == 3_500  # costs kept
