"""The rollups are the events, pre-aggregated: after any way of writing, they equal both
`usage-server rebuild-rollups` and a plain-Python aggregate of the stored events."""
import multiprocessing
import random
import threading
from datetime import datetime, timedelta, timezone

import pytest

from conftest import bearer, create_config, post_events
from oracle import local_rollups, owner_rollups, summed_rows
from seed.generator import seed_owner
from stored import EVENT_ROWS, TOTALS, offsets, rows, run
from stored import local_rollups as stored_local_rollups, owner_rollups as stored_owner_rollups
from usage_server import create_app
from usage_server.storage import connect
from usage_server.queries import ROLLUP_TABLES

WEEK = 7 * 86_400
FORK = multiprocessing.get_context("fork")
# Adding routes compiles URL builders with ast.parse, which CPython 3.11 cannot run in two
# threads at once ("AST constructor recursion depth mismatch"): writer threads make their
# apps one at a time.
APP_CREATION = threading.Lock()
CONFIGS = (("cfg_priced", "gpt-4o", "OpenAI"), ("cfg_unlisted", "house-model", "Acme"), ("cfg_mini", "gpt-4o-mini", "OpenAI"))
FAST = "America/Los_Angeles,Asia/Kathmandu"  # local days at -8:00, -7:00, +5:30 and +5:45 too, local hours at the last two


@pytest.fixture
def app(database):
    return create_app({"TESTING": True, "DATABASE": database, "BUSY_TIMEOUT_MS": 200, "FAST_TIMEZONES": FAST})


def slot_start(seconds: int, grain: int) -> int:
    """Independent of the server: weeks start on Monday 00:00 UTC (1970-01-01 was a Thursday)."""
    if grain == WEEK:
        day = seconds // 86_400
        return (day - (day + 3) % 7) * 86_400
    return seconds - seconds % grain


def stored_rollups(database: str) -> dict[str, list[tuple]]:
    tables = {table: rows(database, f"SELECT owner_id, slot_start, series_id, {TOTALS} FROM {table}")
              for table in ROLLUP_TABLES.values()}
    return tables | stored_owner_rollups(database) | stored_local_rollups(database)


def copies(table: str) -> int:
    """How many times a table counts an event: once per offset in the local rollups (local
    hours: at +5:30 and +5:45 only)."""
    return {"rollup_local_hour": 2}.get(table, 4 if table.startswith("rollup_local") else 1)


def assert_rollups_are_the_events(app, runner) -> dict[str, list[tuple]]:
    """Incremental == Python aggregate of the events == rebuilt; returns the tables."""
    database = app.config["DATABASE"]
    incremental = stored_rollups(database)
    events = rows(database, EVENT_ROWS)
    expected = {table: summed_rows(events, lambda ts_us, grain=grain: [(slot_start(ts_us // 1_000_000, grain),)])
                for grain, table in ROLLUP_TABLES.items()}
    assert offsets(database) == [-28_800, -25_200, 19_800, 20_700]
    expected |= owner_rollups(events) | local_rollups(events, offsets(database))
    assert incremental == expected
    assert all(expected.values())  # something was stored in every table
    result = runner.invoke(args=["rebuild-rollups"])
    assert result.exit_code == 0, result.output
    assert stored_rollups(database) == incremental
    return incremental


def event(rng: random.Random, event_id: str, base: datetime, days: int = 40) -> dict:
    instant = base + timedelta(seconds=rng.randrange(days * 86_400), microseconds=rng.choice([0, 1, 999_999, 250_000]))
    offset = timezone(timedelta(minutes=rng.choice([0, 0, -480, 330, 345])))
    body = {"id": event_id, "timestamp": instant.astimezone(offset).isoformat(),
            "modelConfigId": rng.choice(CONFIGS)[0], "promptTokens": rng.randrange(0, 5000),
            "completionTokens": rng.randrange(0, 3000), "billingSource": rng.choice(["platform", "user"])}
    if rng.random() < 0.4:
        body["cost"] = rng.randrange(0, 500_000) / 10**6
    if rng.random() < 0.2:
        body["totalTokens"] = body["promptTokens"] + body["completionTokens"] + rng.randrange(0, 50)
    if rng.random() < 0.5:
        body["cachedPromptTokens"] = rng.randrange(0, body["promptTokens"] + 1)
        body["cacheWriteTokens"] = rng.randrange(0, body["promptTokens"] - body["cachedPromptTokens"] + 1)
    if rng.random() < 0.5:
        body["reasoningTokens"] = rng.randrange(0, body["completionTokens"] + 1)
    return body


@pytest.fixture
def writer(client, make_key):
    key = make_key("acme")
    for config_id, model_id, provider in CONFIGS:
        create_config(client, key, config_id, model_id, provider)
    return key


def test_after_api_ingestion_with_duplicates_and_conflicts(app, client, runner, writer, make_key):
    rng = random.Random(5)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    first = [event(rng, f"e{n}", base) for n in range(300)]
    # week and day edges: the last microsecond of a Sunday and the first of a Monday
    first += [dict(first[0], id="sunday-end", timestamp="2026-01-11T23:59:59.999999Z"),
              dict(first[0], id="monday-start", timestamp="2026-01-12T00:00:00Z")]
    assert post_events(client, writer, first[:150])["accepted"] == 150
    assert post_events(client, writer, first[150:])["accepted"] == len(first) - 150
    resent = first[:40]  # identical: duplicates only
    conflicting = [dict(item, promptTokens=item["promptTokens"] + 1) for item in first[40:60]]
    fresh = [event(rng, f"late{n}", base) for n in range(30)]
    answer = post_events(client, writer, resent + conflicting + fresh + fresh[:5])
    assert answer == {"accepted": 30, "duplicates": 65, "conflicts": 20}
    other = make_key("globex")  # a second owner, with a config of the same id
    create_config(client, other, "cfg_priced", "gpt-4o", "OpenAI")
    post_events(client, other, [dict(item, modelConfigId="cfg_priced") for item in first[:50]])

    tables = assert_rollups_are_the_events(app, runner)
    assert rows(app.config["DATABASE"], "SELECT COUNT(*) FROM usage_event") == [(len(first) + 30 + 50,)]
    for table_rows in tables.values():  # prompt, cached and reasoning tokens were summed in every table
        assert all(sum(row[column] for row in table_rows) for column in (-3, -2, -1))
    for table, table_rows in tables.items():  # every table counts every stored event once (per offset)
        assert sum(row[-9] for row in table_rows) == (len(first) + 30 + 50) * copies(table), table


def test_after_seeding(app, runner):
    conn = connect(app.config)
    end = int(datetime(2026, 3, 18, 15, 30, tzinfo=timezone.utc).timestamp())
    assert seed_owner(conn, "demo", events=3_000, days=60, seed=1, end=end) == 3_000
    assert seed_owner(conn, "other", events=500, days=400, seed=2, end=end) == 500
    assert seed_owner(conn, "demo", events=3_000, days=60, seed=1, end=end) == 0  # the same ids again
    conn.close()
    assert_rollups_are_the_events(app, runner)


def test_rebuild_restores_owner_rollups_that_went_wrong(app, runner):
    conn = connect(app.config)
    end = int(datetime(2026, 3, 18, 15, 30, tzinfo=timezone.utc).timestamp())
    seed_owner(conn, "demo", events=2_000, days=30, seed=3, end=end)
    conn.close()
    database = app.config["DATABASE"]
    run(database, "DELETE FROM rollup_owner_hour WHERE slot_start % 7200 = 0",
        "UPDATE rollup_owner_day SET requests = requests + 1", "DELETE FROM rollup_owner_week")
    assert stored_owner_rollups(database) != owner_rollups(rows(database, EVENT_ROWS))
    assert runner.invoke(args=["rebuild-rollups"]).exit_code == 0
    assert stored_owner_rollups(database) == owner_rollups(rows(database, EVENT_ROWS))


@pytest.mark.parametrize("table, params, label", [
    ("rollup_owner_hour", {"period": "last_7_days", "granularity": "hour"}, "2026-03-16T09:00:00Z"),
    ("rollup_owner_day", {"period": "last_30_days", "granularity": "day"}, "2026-03-16"),
    ("rollup_owner_week", {"period": "current_year", "granularity": "week"}, "2026-03-09"),
])
def test_unfiltered_time_series_read_the_owner_rollups(client, writer, frozen_now, table, params, label):
    """Marked owner rows show in the time series of all configurations, not in one
    configuration's (read from the series rollups), nor in the totals."""
    post_events(client, writer, [{"id": name, "timestamp": f"{day}T09:10:00Z", "modelConfigId": "cfg_priced",
                                  "promptTokens": 10, "completionTokens": 5}
                                 for name, day in (("a", "2026-03-10"), ("b", "2026-03-16"))])
    run(client.application.config["DATABASE"], f"UPDATE {table} SET requests = requests + 1000")

    def answer(**extra):
        response = client.get("/v1/model-usage", query_string={**params, **extra}, headers=bearer(writer))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        return {point["date"]: point["requests"] for point in body["timeSeries"]}[label], body["summary"]["totalRequests"]

    everything, one = answer(), answer(modelConfigId="cfg_priced")
    assert one[0] == 1 and everything == (1001, one[1])


def post_until_stored(client, key: str, batch: list[dict]) -> None:
    """One batch, retried while the database is busy (503), as a client would."""
    for _ in range(200):
        response = client.post("/v1/model-usage/events", json={"events": batch}, headers=bearer(key))
        if response.status_code != 503:
            assert response.status_code == 200, response.get_json()
            return
    raise AssertionError("still busy after 200 attempts")


def ingest_share(database: str, key: str, worker: int, batches: int) -> None:
    """A writer of its own app (its own connections): ids overlap the other writers'."""
    rng = random.Random(worker)
    with APP_CREATION:
        client = create_app({"TESTING": True, "DATABASE": database, "BUSY_TIMEOUT_MS": 2000,
                             "FAST_TIMEZONES": FAST}).test_client()
    base = datetime(2026, 2, 1, tzinfo=timezone.utc)
    for number in range(batches):
        batch = [event(rng, f"w{worker}-{number}-{n}", base, days=10) for n in range(40)]
        batch += [event(random.Random(f"{number}-{n}"), f"shared-{number}-{n}", base, days=10) for n in range(10)]
        post_until_stored(client, key, batch)


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_after_concurrent_ingestion(app, runner, writer, kind):
    database, writers, batches = app.config["DATABASE"], 4, 8
    failures = []

    def guarded(number):
        try:
            ingest_share(database, writer, number, batches)
        except BaseException as exc:  # reported below: a thread's exception would be lost
            failures.append(exc)
            raise

    start = threading.Thread if kind == "threads" else FORK.Process
    workers = [start(target=guarded, args=(number,)) for number in range(writers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert failures == []
    if kind == "processes":
        assert [worker.exitcode for worker in workers] == [0] * writers
    tables = assert_rollups_are_the_events(app, runner)
    stored = writers * batches * 40 + batches * 10  # shared ids are stored once
    for table, table_rows in tables.items():
        assert sum(row[-9] for row in table_rows) == stored * copies(table), table
