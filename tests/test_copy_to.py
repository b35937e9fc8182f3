"""`usage-server copy-to TARGET`: a seeded SQLite database moved up to PostgreSQL (and every
other direction) answers every request alike with the same raw keys; a re-run copies nothing
twice; a target holding other data is refused and left as it was."""
import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import FROZEN_NOW, bearer, create_config, post_events
from oracle import owner_rollups
from postgres_cluster import PASSWORD
from stored import EVENT_ROWS
from stored import rows as stored_rows
from stored import owner_rollups as stored_owner_rollups
from seed import generator
from usage_server import api, copying, create_app
from usage_server.queries import COPIED_TABLES, LOCAL_TABLES, OWNER_ROLLUP_TABLES, ROLLUP_TABLES
from usage_server.storage import connect, write_transaction

FAST = "Asia/Kolkata,Asia/Kathmandu"  # local rollups at +5:30 and +5:45, kept on both ends
SCRIPT = Path(sys.executable).with_name("usage-server")
COUNT_LINE = re.compile(r"^(\w+): (\d[\d,]*) new of (\d[\d,]*)$", re.M)
EVERY_TABLE = (*COPIED_TABLES, "owner_version", "rollup_offset", *ROLLUP_TABLES.values(), *LOCAL_TABLES.values(),
               *OWNER_ROLLUP_TABLES.values(),
               "schema_version")
PRICES = [  # price overrides: gpt-4o dearer than the catalogue's 2.5 / 10, and a model of its own
    {"modelId": "gpt-4o", "provider": "OpenAI", "displayName": "GPT-4o", "promptPerMillion": 3, "completionPerMillion": 12,
     "cacheReadPerMillion": 1.5, "cacheWritePerMillion": 3.75},
    {"modelId": "acme-private-1", "provider": "Acme", "promptPerMillion": 0.5, "completionPerMillion": 1.5},
]
FILTERED = {"demo": "cfg_code_review", "beta": "cfg_support_chat", "acme": "cfg_gpt", "idle": None}
QUERIES = [
    *({"period": period, "granularity": granularity}
      for period in ("today", "yesterday", "last_7_days") for granularity in ("hour", "day")),
    *({"period": period, "granularity": granularity}
      for period in ("last_30_days", "current_month", "last_month", "current_year")
      for granularity in ("day", "week", "month")),
    {"startDate": "2026-01-10", "endDate": "2026-03-18", "granularity": "week"},
]
ZONES = (None, "Asia/Kolkata", "Asia/Kathmandu", "America/New_York")  # the last one has no local rollups


def invoke(app, *args, code=0):
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == code, result.output
    return result.output


def serve(database):
    """The app a server runs on `database` (its start-up prepares it, FAST_TIMEZONES included)."""
    return create_app({"TESTING": True, "DATABASE": database, "FAST_TIMEZONES": FAST,
                       "DATA_SOURCE": "usage-server"})  # the same name on both engines


def last_line(output):
    return output.rstrip("\n").split("\n")[-1]


def acme_events():
    """Events of every kind: catalogue-priced, sent costs, user-billed, with token details or
    without, around local midnights."""
    start = FROZEN_NOW - timedelta(days=40)
    return [
        {"id": f"acme-{n:03d}", "timestamp": (start + timedelta(minutes=615 * n)).isoformat(),
         "modelConfigId": "cfg_gpt" if n % 3 else "cfg_private", "promptTokens": 100 + n, "completionTokens": n,
         **({"cost": n / 1000} if n % 4 == 0 else {}), **({"billingSource": "user"} if n % 5 == 0 else {}),
         **({"executionTime": n / 7} if n % 2 else {}),
         **({"cachedPromptTokens": n, "cacheWriteTokens": n % 7, "reasoningTokens": n // 2} if n % 3 != 1 else {})}
        for n in range(90)
    ]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A seeded SQLite database with four owners and price overrides; read-only for the tests."""
    folder = tmp_path_factory.mktemp("source")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generator, "time", SimpleNamespace(time=FROZEN_NOW.timestamp))
        patch.setattr(api, "utc_now", lambda: FROZEN_NOW)
        app = serve(str(folder / "source.sqlite"))
        (folder / "prices.json").write_text(json.dumps({"models": PRICES}))
        invoke(app, "import-prices", str(folder / "prices.json"))
        keys = {"demo": last_line(invoke(app, "seed", "--owner", "demo", "--events", "3000", "--days", "60")),
                "beta": last_line(invoke(app, "seed", "--owner", "beta", "--events", "1500", "--days", "20",
                                         "--seed", "2"))}
        keys["acme"] = last_line(invoke(app, "create-key", "acme", "--name", "writer"))
        revoked = last_line(invoke(app, "create-key", "acme", "--scopes", "read", "--name", "old"))
        invoke(app, "revoke-key", revoked)
        keys["idle"] = last_line(invoke(app, "create-key", "idle", "--scopes", "read"))
        client = app.test_client()
        create_config(client, keys["acme"], "cfg_gpt", "gpt-4o", "OpenAI", settings={"temperature": 0.2})
        create_config(client, keys["acme"], "cfg_private", "acme-private-1", "Acme", displayName="Private")
        post_events(client, keys["acme"], acme_events())
        expected = answers(app, keys)
    for owner, events in {"demo": 3000, "beta": 1500, "acme": 90, "idle": 0}.items():  # all of them this year
        for zone in ZONES:
            usage = expected["answers"][(owner, "usage", "current_year", "month", zone)]
            assert usage["summary"]["totalRequests"] == events
    return SimpleNamespace(app=app, database=app.config["DATABASE"], keys=keys, revoked=revoked, answers=expected)


def answers(app, keys) -> dict:
    """Every answer this test compares, and the ETags they came with, for each owner's key."""
    client, found, tags = app.test_client(), {}, {}

    def get(name, path, **query):
        response = client.get(path, query_string=query, headers=bearer(keys[name[0]]))
        assert response.status_code == 200, (name, response.get_json())
        found[name] = response.get_json()
        if response.headers.get("ETag"):
            tags[name] = response.headers["ETag"]

    for owner, config_id in FILTERED.items():
        for query in QUERIES:
            for zone in ZONES:
                get((owner, "usage", *query.values(), zone), "/v1/model-usage", **query,
                    **({"timezone": zone} if zone else {}))
            if config_id:
                get((owner, "usage", *query.values(), config_id), "/v1/model-usage", **query,
                    modelConfigId=config_id, timezone="Asia/Kolkata")
        get((owner, "configs"), "/v1/model-configs")
        get((owner, "configs usage"), "/v1/model-configs/usage")
        for config in found[(owner, "configs")]["data"][:4]:
            get((owner, "details", config["id"]), f"/v1/model-usage/{config['id']}", limit=50)
    return {"answers": found, "tags": tags}


def contents(database, tables=EVERY_TABLE, copied_columns=False) -> dict:
    """Every row of `tables`, in a stable order (the copied columns only, to compare engines)."""
    conn = connect(create_app({"DATABASE": database}, prepare_database=False).config)
    try:
        return {table: sorted((tuple(row) for row in conn.execute(
                    f"SELECT {', '.join(COPIED_TABLES[table][2]) if copied_columns else '*'} FROM {table}")), key=repr)
                for table in tables}
    finally:
        conn.close()


def source_counts(database) -> dict:
    """The oracle for the printed counts: the source's rows per table, read by plain sqlite3."""
    conn = sqlite3.connect(database)
    counts = {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in COPIED_TABLES}
    conn.close()
    return counts


def printed_counts(output) -> dict:
    """table -> (new, of) from copy-to's summary lines."""
    return {table: (int(new.replace(",", "")), int(total.replace(",", "")))
            for table, new, total in COUNT_LINE.findall(output)}


@pytest.fixture
def small_batches(monkeypatch):
    """Pages of 7 rows, so every table (composite keys, keys in creation order) spans many pages."""
    monkeypatch.setattr(copying, "BATCH", 7)
    monkeypatch.setattr(copying, "PROGRESS_ROWS", 700)


def assert_same_answers(app, source):
    served = answers(app, source.keys)
    assert served["answers"] == source.answers["answers"]
    assert served["tags"].keys() == source.answers["tags"].keys()
    assert not set(served["tags"].values()) & set(source.answers["tags"].values())  # no stale ETag survives


# --- SQLite -> PostgreSQL, the main use -----------------------------------------------------------


def test_postgresql_target_answers_alike_with_the_same_keys(source, postgres, frozen_now, small_batches):
    target = postgres.new_schema()
    serve(target)  # a server already started on it: default catalogue, local offsets, no data
    output = invoke(source.app, "copy-to", target)
    counts = source_counts(source.database)
    assert printed_counts(output) == {table: (2 if table == "model" else total, total)  # 2 prices overridden or added
                                      for table, total in counts.items()}
    assert "  usage_event: 700 of 4,590 read\n" in output  # a progress line every PROGRESS_ROWS
    assert re.search(r"^Rebuilt the target's rollups from 4,590 events in [\d.]+ s\.$", output, re.M)
    assert PASSWORD not in output  # the target's URL is printed without its password
    app = serve(target)
    assert_same_answers(app, source)
    assert invoke(app, "list-keys") == invoke(source.app, "list-keys")  # same keys, in creation order
    assert app.test_client().get("/v1/model-configs", headers=bearer(source.revoked)).status_code == 401
    assert contents(target, COPIED_TABLES, copied_columns=True) == contents(source.database, COPIED_TABLES,
                                                                            copied_columns=True)
    assert stored_owner_rollups(target) == owner_rollups(stored_rows(target, EVENT_ROWS))  # built by the copy


def test_postgresql_target_takes_new_owners_configs_and_events(source, postgres, frozen_now):
    target = postgres.new_schema()
    invoke(source.app, "copy-to", target)
    app, key = serve(target), source.keys["acme"]
    client = app.test_client()
    newcomer = last_line(invoke(app, "create-key", "newcomer"))  # a new owner id after the copied ones
    event = {"id": "after-copy", "timestamp": FROZEN_NOW.isoformat(), "modelConfigId": "cfg_new",
             "promptTokens": 1000, "completionTokens": 100}
    for owner_key in (key, newcomer):
        create_config(client, owner_key, "cfg_new", "gpt-4o", "OpenAI")  # new series ids after the copied ones
        assert post_events(client, owner_key, [event])["accepted"] == 1
    details = client.get("/v1/model-usage/cfg_new", headers=bearer(key)).get_json()["recentUsage"]
    assert details[0]["estimatedCost"] == 0.0042  # 1000 * $3 + 100 * $12 per million: the copied override
    again = post_events(client, key, acme_events()[:5])  # fingerprints copied: a re-send is a plain duplicate
    assert (again["accepted"], again["duplicates"], again["conflicts"]) == (0, 5, 0)


# --- every other direction ---------------------------------------------------------------------------


def test_sqlite_file_target_through_the_installed_script(source, tmp_path, frozen_now):
    target = tmp_path / "moved.sqlite"  # created by copy-to
    env = {name: value for name, value in os.environ.items() if not name.startswith(("USAGE_SERVER_", "FLASK_"))}
    result = subprocess.run([str(SCRIPT), "copy-to", str(target)], env={**env, "USAGE_SERVER_DATABASE": source.database},
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    counts = source_counts(source.database)
    assert printed_counts(result.stdout) == {table: (total, total) for table, total in counts.items()}
    assert_same_answers(serve(str(target)), source)


def test_every_direction_keeps_every_row(source, postgres, tmp_path, frozen_now, small_batches):
    """SQLite -> PostgreSQL -> PostgreSQL -> SQLite: each hop keeps every copied row exactly."""
    first, second, last = postgres.new_schema(), postgres.new_schema(), str(tmp_path / "back.sqlite")
    invoke(source.app, "copy-to", first)
    invoke(serve(first), "copy-to", second)
    invoke(serve(second), "copy-to", last)
    rows = contents(source.database, COPIED_TABLES, copied_columns=True)
    for database in (first, second, last):
        assert contents(database, COPIED_TABLES, copied_columns=True) == rows
        assert stored_owner_rollups(database) == stored_owner_rollups(source.database)
    assert_same_answers(serve(last), source)


# --- re-runs --------------------------------------------------------------------------------------


def test_a_re_run_copies_nothing_and_changes_nothing(source, database, small_batches):
    target = database  # of each engine
    invoke(source.app, "copy-to", target)
    before = contents(target)
    output = invoke(source.app, "copy-to", target)
    assert printed_counts(output) == {table: (0, total) for table, total in source_counts(source.database).items()}
    assert "  usage_event in the target: 4,200 of 4,590 checked\n" in output
    assert "Nothing new" in output and "Rebuilt" not in output
    assert contents(target) == before


def test_a_re_run_after_the_source_grew_copies_just_the_new_rows(source, postgres, tmp_path, frozen_now):
    grown = serve(str(tmp_path / "grown.sqlite"))  # a private source: a copy of the shared one
    invoke(source.app, "copy-to", grown.config["DATABASE"])
    target = postgres.new_schema()
    invoke(grown, "copy-to", target)
    key = source.keys["acme"]
    tag = serve(target).test_client().get("/v1/model-usage", headers=bearer(key)).headers["ETag"]
    later = [event | {"id": f"later-{event['id']}"} for event in acme_events()[-5:]]
    post_events(grown.test_client(), key, later)
    output = invoke(grown, "copy-to", target)
    assert printed_counts(output)["usage_event"] == (5, 4_595)
    assert {table: new for table, (new, _) in printed_counts(output).items() if table != "usage_event"} == dict.fromkeys(
        (table for table in COPIED_TABLES if table != "usage_event"), 0)
    client = serve(target).test_client()
    response = client.get("/v1/model-usage", query_string={"period": "last_month"}, headers=bearer(key))
    assert response.get_json() == grown.test_client().get(
        "/v1/model-usage", query_string={"period": "last_month"}, headers=bearer(key)).get_json()
    assert client.get("/v1/model-usage", headers=bearer(key)).headers["ETag"] != tag


def test_a_failed_copy_leaves_nothing_and_a_re_run_completes_it(source, postgres, monkeypatch):
    target = postgres.new_schema()

    def broken(conn):
        raise RuntimeError("the rollup rebuild failed")

    monkeypatch.setattr(copying, "rebuild_rollups", broken)
    assert "the rollup rebuild failed" in str(source.app.test_cli_runner().invoke(args=["copy-to", target]).exception)
    assert all(not rows for rows in contents(target, COPIED_TABLES).values())
    monkeypatch.undo()
    output = invoke(source.app, "copy-to", target)
    assert printed_counts(output)["usage_event"] == (4_590, 4_590)


# --- refusals --------------------------------------------------------------------------------------


def an_owner_of_its_own(app, source, tmp_path):
    invoke(app, "create-key", "stranger")


def a_changed_event(app, source, tmp_path):
    conn = connect(app.config)
    with write_transaction(conn):
        conn.execute("UPDATE usage_event SET prompt_tokens = prompt_tokens + 1 WHERE id = 17")
    conn.close()


def a_key_revoked_there(app, source, tmp_path):
    invoke(app, "revoke-key", source.keys["acme"])


def a_price_of_its_own(app, source, tmp_path):
    path = tmp_path / "own-prices.json"
    path.write_text(json.dumps({"models": [{"modelId": "gpt-4o", "provider": "OpenAI", "promptPerMillion": 4,
                                            "completionPerMillion": 16}]}))
    invoke(app, "import-prices", str(path))


@pytest.mark.parametrize("filled_first, change, named", [
    (False, an_owner_of_its_own, "owner (id=1) differs from the source's"),  # used before the move
    (True, an_owner_of_its_own, "owner (id=5) is not in the source"),
    (True, a_changed_event, "usage_event (id=17) differs from the source's"),
    (True, a_key_revoked_there, "api_key (id="),
    (True, a_price_of_its_own, "model (model_id='gpt-4o') differs from the source's"),
])
def test_a_target_with_other_data_is_refused_and_left_unchanged(source, database, tmp_path, filled_first, change,
                                                                named):
    target = database  # of each engine
    if filled_first:
        invoke(source.app, "copy-to", target)
    change(serve(target), source, tmp_path)
    before = contents(target)
    output = invoke(source.app, "copy-to", target, code=1)
    assert "already holds other data" in output and named in output and "Nothing was copied" in output
    assert PASSWORD not in output
    assert "Traceback" not in output
    assert contents(target) == before


def test_copying_onto_itself_is_refused(source):
    spelled_otherwise = os.path.join(os.path.dirname(source.database), ".", os.path.basename(source.database))
    before = contents(source.database)
    output = invoke(source.app, "copy-to", spelled_otherwise, code=1)
    assert "is the configured database itself" in output
    assert contents(source.database) == before
