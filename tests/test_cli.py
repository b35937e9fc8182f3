"""The `usage-server` commands, through the test runner and through the installed script."""
import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from conftest import FROZEN_NOW, assert_error, bearer, create_config, post_events
from oracle import expected_usage
from postgres_cluster import PASSWORD
from seed import generator
from usage_server import create_app
from usage_server.cli import main
from usage_server.storage import connect, write_transaction

KEY_LINE = re.compile(r"usk_[0-9a-f]{12}_[A-Za-z0-9_-]{40}")
SCRIPT = Path(sys.executable).with_name("usage-server")
EVENTS = [
    {"id": "e1", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 1000,
     "completionTokens": 100},
    {"id": "e2", "timestamp": "2026-03-17T23:59:59.5Z", "modelConfigId": "cfg_a", "promptTokens": 50,
     "completionTokens": 5, "cost": 0.125, "billingSource": "user"},
    {"id": "e3", "timestamp": "2026-03-12T00:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 7,
     "completionTokens": 3, "cost": 0.000042},
]
PRICES = {"gpt-4o": ("2.5", "10")}


def invoke(runner, *args):
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output


def new_key(runner, *args):
    """create-key's last line of stdout is the raw key, alone."""
    output = invoke(runner, "create-key", *args)
    last = output.rstrip("\n").split("\n")[-1]
    assert KEY_LINE.fullmatch(last), output
    return last


def key_rows(runner, *owner):
    lines = invoke(runner, "list-keys", *owner).rstrip("\n").split("\n")
    assert lines[0].split("\t") == ["id", "owner", "name", "scopes", "created", "revoked"]
    return [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]


def named(database: str) -> str:
    """The database as the commands name it: the test databases' password masked in a URL."""
    return database.replace(f":{PASSWORD}@", ":***@")


def usage(client, key, **query):
    response = client.get("/v1/model-usage", query_string=query, headers=bearer(key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def stocked(client, runner, frozen_now):
    """A key made by the CLI, one config and three events: returns (key, config)."""
    key = new_key(runner, "acme")
    config = create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    post_events(client, key, EVENTS)
    return key, config


# --- init-db ------------------------------------------------------------------------------


def test_init_db_is_idempotent_and_keeps_data(app, client, runner, stocked):
    key, config = stocked
    before = usage(client, key)
    assert before["summary"]["totalRequests"] == 3
    for _ in range(2):
        assert invoke(runner, "init-db") == (f"Using the database {named(app.config['DATABASE'])}.\n"
                                             f"Initialised the database at {named(app.config['DATABASE'])}.\n")
    assert usage(client, key) == before
    assert client.get("/v1/model-configs", headers=bearer(key)).get_json()["data"] == [config]


def test_init_db_drop_starts_over(client, runner, stocked):
    key, _ = stocked
    invoke(runner, "init-db", "--drop")
    assert_error(client.get("/v1/model-usage", headers=bearer(key)), 401, "unauthorized")
    fresh = new_key(runner, "acme")
    assert client.get("/v1/model-configs", headers=bearer(fresh)).get_json() == {"data": [], "total": 0}
    assert usage(client, fresh)["summary"]["totalRequests"] == 0
    assert [row["id"] for row in key_rows(runner)] == [fresh.split("_")[1]]
    create_config(client, fresh, "cfg_a")  # the id is free again
    assert post_events(client, fresh, EVENTS)["accepted"] == 3  # so are the event ids


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scopes, can_read, can_write",
    [(None, True, True), ("read,write", True, True), ("read", True, False), ("write", False, True),
     (" write , read ", True, True)],
)
def test_create_key_scopes_work_against_the_api(client, runner, frozen_now, scopes, can_read, can_write):
    key = new_key(runner, "acme", *(["--scopes", scopes] if scopes is not None else []))
    read = client.get("/v1/model-usage", headers=bearer(key))
    write = client.post("/v1/model-configs", json={"id": "cfg_x", "modelId": "gpt-4o", "provider": "OpenAI"},
                        headers=bearer(key))
    assert read.status_code == (200 if can_read else 403)
    assert write.status_code == (201 if can_write else 403)
    [row] = key_rows(runner)
    assert row["scopes"] == ",".join(s for s, ok in (("read", can_read), ("write", can_write)) if ok)


@pytest.mark.parametrize("scopes", ["admin", "", "read,admin", ","])
def test_create_key_refuses_unknown_scopes(runner, scopes):
    result = runner.invoke(args=["create-key", "acme", "--scopes", scopes])
    assert result.exit_code == 2
    assert "usk_" not in result.output
    assert key_rows(runner) == []


def test_keys_of_one_owner_share_its_data_and_a_new_owner_starts_empty(client, runner, stocked):
    key, _ = stocked
    second = new_key(runner, "acme", "--scopes", "read")
    other = new_key(runner, "globex")
    assert usage(client, second) == usage(client, key)
    assert usage(client, other)["summary"]["totalRequests"] == 0


def test_list_keys_never_shows_the_raw_key_or_its_hash(runner):
    keys = {name: new_key(runner, owner, "--name", name) for owner, name in
            (("acme", "ci"), ("acme", "dashboard"), ("globex", "etl"))}
    output = invoke(runner, "list-keys")
    for raw in keys.values():
        assert raw not in output
        assert raw[len("usk_") + 12 + 1:] not in output  # the secret, by position (it may hold "_")
        assert hashlib.sha256(raw.encode()).hexdigest() not in output
    rows = key_rows(runner)
    assert sorted((row["id"], row["owner"], row["name"], row["scopes"], row["revoked"]) for row in rows) == sorted(
        (keys[name].split("_")[1], owner, name, "read,write", "-")
        for owner, name in (("acme", "ci"), ("acme", "dashboard"), ("globex", "etl"))
    )
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["created"]) for row in rows)
    assert [row["name"] for row in key_rows(runner, "globex")] == ["etl"]
    assert key_rows(runner, "nobody") == []


@pytest.mark.parametrize("by", ["id", "raw key"])
def test_revoke_key_by_id_or_by_raw_key(client, runner, frozen_now, by):
    key, kept = new_key(runner, "acme"), new_key(runner, "acme")
    assert client.get("/v1/model-usage", headers=bearer(key)).status_code == 200
    assert "Revoked." in invoke(runner, "revoke-key", key.split("_")[1] if by == "id" else key)
    assert_error(client.get("/v1/model-usage", headers=bearer(key)), 401, "unauthorized")
    assert client.get("/v1/model-usage", headers=bearer(kept)).status_code == 200
    rows = {row["id"]: row for row in key_rows(runner)}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[key.split("_")[1]]["revoked"])
    assert rows[kept.split("_")[1]]["revoked"] == "-"
    assert "Already revoked." in invoke(runner, "revoke-key", key)


@pytest.mark.parametrize("given", ["0123456789ab", "usk_0123456789ab_" + "x" * 40, "%"])
def test_revoke_unknown_key_fails(runner, given):
    key = new_key(runner, "acme")
    result = runner.invoke(args=["revoke-key", given])
    assert result.exit_code == 1
    assert "no such key" in result.output
    assert key_rows(runner)[0]["revoked"] == "-"
    assert key.split("_")[1] == key_rows(runner)[0]["id"]


# --- seed --------------------------------------------------------------------------------------


@pytest.fixture
def pinned_seed_clock(monkeypatch):
    """The seed spreads events over the days before now: pin that now too."""
    monkeypatch.setattr(generator, "time", SimpleNamespace(time=FROZEN_NOW.timestamp))


def stored_events(config):
    conn = connect(config)
    rows = conn.execute(
        "SELECT event_id, ts_us, prompt_tokens, completion_tokens, total_tokens, cost_micros, execution_us,"
        " billing_source FROM usage_event ORDER BY event_id").fetchall()
    conn.close()
    return rows


def seed(runner, *args):
    output = invoke(runner, "seed", *args)
    last = output.rstrip("\n").split("\n")[-1]
    assert KEY_LINE.fullmatch(last), output
    return last


def test_seed_is_deterministic_and_prints_a_read_only_key(app, client, runner, engine, new_database, frozen_now,
                                                          pinned_seed_clock):
    args = ("--events", "3000", "--days", "30", "--seed", "7")
    key = seed(runner, *args)
    twin = create_app({"TESTING": True, "DATABASE": new_database(engine)})
    twin_key = seed(twin.test_cli_runner(), *args)
    events = stored_events(app.config)
    assert len(events) == 3000
    assert events == stored_events(twin.config)
    query = {"period": "last_30_days", "granularity": "week"}
    body = usage(client, key, **query)
    assert body == usage(twin.test_client(), twin_key, **query)
    assert body["summary"]["totalRequests"] == 3000
    assert body["summary"]["platformCost"] > 0 and body["summary"]["userCost"] > 0
    assert len({model["provider"] for model in body["usageByModel"].values()}) >= 5
    assert len(body["usageByModel"]) >= 10
    assert_error(client.post("/v1/model-configs", json={"modelId": "gpt-4o", "provider": "OpenAI"},
                             headers=bearer(key)), 403, "forbidden")
    assert [row["scopes"] for row in key_rows(runner, "demo")] == ["read"]


def test_seed_write_key_can_post_to_the_demo_owner(app, client, runner, frozen_now, pinned_seed_clock):
    output = invoke(runner, "seed", "--events", "200", "--days", "5", "--write-key")
    lines = output.rstrip("\n").split("\n")
    assert lines[-4:-3] == ["Read-write key:"] and lines[-2] == "Read-only key:", output
    writer, reader = lines[-3], lines[-1]
    assert KEY_LINE.fullmatch(writer) and KEY_LINE.fullmatch(reader) and writer != reader
    assert named(app.config["DATABASE"]) in output and PASSWORD not in output
    configs = client.get("/v1/model-configs", headers=bearer(reader)).get_json()["data"]
    event = {"id": "demo-posted-1", "timestamp": FROZEN_NOW.isoformat(), "modelConfigId": configs[0]["id"],
             "promptTokens": 1000, "completionTokens": 10, "cost": 0.25}
    before = usage(client, reader, period="today")["summary"]
    response = client.post("/v1/model-usage/events", json={"events": [event]}, headers=bearer(writer))
    assert response.status_code == 200 and response.get_json()["accepted"] == 1
    after = usage(client, reader, period="today")["summary"]
    assert after["totalRequests"] == before["totalRequests"] + 1
    assert Decimal(str(after["totalCost"])) - Decimal(str(before["totalCost"])) == Decimal("0.25")
    assert sorted(row["scopes"] for row in key_rows(runner, "demo")) == ["read", "read,write"]


def test_another_seed_gives_other_events(app, runner, engine, new_database, pinned_seed_clock):
    seed(runner, "--events", "500", "--days", "10", "--seed", "1")
    other = create_app({"TESTING": True, "DATABASE": new_database(engine)})
    seed(other.test_cli_runner(), "--events", "500", "--days", "10", "--seed", "2")
    first, second = stored_events(app.config), stored_events(other.config)
    assert len(first) == len(second) == 500
    assert {row[1:] for row in first} != {row[1:] for row in second}


def test_seed_events_lie_within_the_last_days(app, runner, pinned_seed_clock):
    seed(runner, "--events", "1000", "--days", "3", "--seed", "5")
    now_us = int(FROZEN_NOW.timestamp()) * 1_000_000
    first_day_us = (int(FROZEN_NOW.timestamp()) // 86_400 - 2) * 86_400 * 1_000_000
    assert all(first_day_us <= row[1] < now_us for row in stored_events(app.config))


# --- import-prices and rebuild-rollups -------------------------------------------------------------


def write_catalogue(tmp_path, models):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": models}))
    return str(path)


def test_import_prices_prices_new_events_only(client, runner, stocked, tmp_path):
    key, config = stocked
    before = usage(client, key)
    path = write_catalogue(tmp_path, [
        {"modelId": "gpt-4o", "provider": "OpenAI", "displayName": "GPT-4o", "promptPerMillion": 5,
         "completionPerMillion": 20},
        {"modelId": "acme-large", "provider": "Acme", "displayName": "Acme Large", "promptPerMillion": 0.7,
         "completionPerMillion": 2.1},
    ])
    assert "Imported 2 model prices." in invoke(runner, "import-prices", path)
    assert usage(client, key) == before  # stored costs are history
    acme = create_config(client, key, "cfg_b", "acme-large", "Acme")
    assert acme["modelName"] == "Acme Large"
    later = [
        {"id": "e4", "timestamp": "2026-03-18T11:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 333,
         "completionTokens": 77},
        {"id": "e5", "timestamp": "2026-03-18T12:00:00Z", "modelConfigId": "cfg_b", "promptTokens": 1234,
         "completionTokens": 567},
    ]
    post_events(client, key, later)
    body = usage(client, key, period="today")
    old = expected_usage(EVENTS, {"cfg_a": config}, PRICES, date(2026, 3, 18), date(2026, 3, 18))
    new = expected_usage(later, {"cfg_a": config, "cfg_b": acme}, {"gpt-4o": ("5", "20"), "acme-large": ("0.7", "2.1")},
                         date(2026, 3, 18), date(2026, 3, 18))
    assert body["summary"]["totalRequests"] == old["summary"]["totalRequests"] + new["summary"]["totalRequests"]
    assert round(body["summary"]["totalCost"] - old["summary"]["totalCost"], 6) == new["summary"]["totalCost"]
    assert body["usageByModel"]["acme-large"] == new["usageByModel"]["acme-large"]
    assert body["meta"]["unpricedRequests"] == 0
    assert "Initialised" in invoke(runner, "init-db")
    assert client.post("/v1/model-configs", json={"id": "cfg_c", "modelId": "acme-large", "provider": "Acme"},
                       headers=bearer(key)).get_json()["modelName"] == "Acme Large"  # init-db kept the import


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps({"models": [{"modelId": "x"}]}), json.dumps({"models": [
        {"modelId": "x", "provider": "X", "promptPerMillion": -1}]}), json.dumps([1, 2])],
)
def test_import_prices_refuses_a_bad_file(runner, tmp_path, content):
    path = tmp_path / "prices.json"
    path.write_text(content)
    result = runner.invoke(args=["import-prices", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output


def test_import_prices_needs_an_existing_file(runner, tmp_path):
    assert runner.invoke(args=["import-prices", str(tmp_path / "missing.json")]).exit_code == 2


def test_rebuild_rollups_restores_the_report_from_the_events(app, client, runner, stocked):
    key, config = stocked
    expected = {
        granularity: expected_usage(EVENTS, {"cfg_a": config}, PRICES, date(2026, 3, 12), date(2026, 3, 18), granularity)
        for granularity in ("day", "hour")
    }
    conn = connect(app.config)
    with write_transaction(conn):
        for table in ("rollup_day", "rollup_hour", "rollup_quarter"):
            conn.execute(f"UPDATE {table} SET requests = requests * 2, platform_cost = platform_cost + 1")
    conn.close()
    assert usage(client, key)["summary"] != expected["day"]["summary"]
    stale_tag = client.get("/v1/model-usage", headers=bearer(key)).headers["ETag"]
    assert "Rebuilt the rollups" in invoke(runner, "rebuild-rollups")
    # a client holding the tag of the wrong answer must get the corrected one, not a 304
    assert client.get("/v1/model-usage", headers={**bearer(key), "If-None-Match": stale_tag}).status_code == 200
    for granularity, oracle in expected.items():
        body = usage(client, key, granularity=granularity)
        assert (body["summary"], body["usageByModel"], body["timeSeries"]) == (
            oracle["summary"], oracle["usageByModel"], oracle["timeSeries"])
    invoke(runner, "rebuild-rollups")  # twice: nothing counted twice
    assert usage(client, key)["summary"] == expected["day"]["summary"]


# --- the installed console script ------------------------------------------------------------------


def run_script(database, *args, check=True, cwd=None):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("USAGE_SERVER_", "FLASK_"))}
    env["USAGE_SERVER_DATABASE"] = str(database)
    result = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60,
                            cwd=cwd or Path(database).parent)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_console_script_sets_up_a_database_whose_key_works(database, tmp_path, monkeypatch, frozen_now):
    run_script(database, "init-db", cwd=tmp_path)
    output = run_script(database, "create-key", "acme", "--scopes", "read", "--name", "cli", cwd=tmp_path).stdout
    key = output.rstrip("\n").split("\n")[-1]
    assert KEY_LINE.fullmatch(key)
    monkeypatch.setenv("USAGE_SERVER_DATABASE", database)
    client = create_app({"TESTING": True}).test_client()
    assert client.get("/v1/model-usage", headers=bearer(key)).status_code == 200
    assert client.post("/v1/model-configs", json={"modelId": "m", "provider": "p"},
                       headers=bearer(key)).status_code == 403
    listed = CliRunner().invoke(main, ["list-keys"])  # the script's own entry point, in process
    assert key not in listed.output and "\tacme\tcli\tread\t" in listed.output


def test_console_script_lists_every_command(tmp_path, monkeypatch):
    monkeypatch.setenv("USAGE_SERVER_DATABASE", str(tmp_path / "usage.sqlite"))
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert {"init-db", "create-key", "list-keys", "revoke-key", "seed", "import-prices", "rebuild-rollups",
            "run"} <= set(re.findall(r"^  ([a-z-]+)", result.output, re.M))


def test_console_script_never_overwrites_a_file_that_is_not_a_database(tmp_path):
    database = tmp_path / "notes.txt"
    database.write_text("precious notes, not a database\n")
    result = run_script(database, "init-db", check=False)
    assert result.returncode != 0
    assert "not an SQLite database" in result.stderr
    assert "Traceback" not in result.stderr
    assert database.read_text() == "precious notes, not a database\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
