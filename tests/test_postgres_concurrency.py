"""Exactly once, all or nothing, and rollups equal to a rebuild, with writers on many
connections, processes and hosts over one PostgreSQL database.

Every test is bounded by a count of batches; time bounds only turn a hang into a failure.
"""
import random
import threading
from datetime import date, datetime, timedelta, timezone

import pytest
import requests

from conftest import bearer, create_config
from gunicorn_server import gunicorn_host
from oracle import expected_usage
from support import catalogue_prices, prepare_database
from test_concurrency import (CONFIGS, EVENTS, Run, assert_reports_are_the_oracle, batch_template, batch_totals, call,
                              check_report, final_reports, planned_batches)
from usage_server import create_app
from usage_server.ingest import rebuild_rollups
from usage_server.queries import LOCAL_TABLES, ROLLUP_TABLES
from usage_server.storage import connect, write_transaction

FAST = "Asia/Kolkata"  # local days, weeks and hours at +5:30 are kept as well
WAIT_BOUND_SECONDS = 600  # only a failure bound
NEVER_MS = 600_000  # a busy timeout no writer reaches: every wait for the write lock ends in its turn
EVENTS_PATH = "/v1/model-usage/events"


def stored_ids(config) -> list[str]:
    conn = connect(config)
    try:
        return [row[0] for row in conn.execute("SELECT event_id FROM usage_event")]
    finally:
        conn.close()


def rollup_rows(conn) -> dict[str, list[tuple]]:
    return {table: sorted(tuple(row) for row in conn.execute(f"SELECT * FROM {table}"))
            for table in [*ROLLUP_TABLES.values(), *LOCAL_TABLES.values()]}


def assert_rollups_equal_a_rebuild(config) -> None:
    """Every rollup row written by the racing writers equals the one a rebuild from the events
    computes, and no row is missing or extra."""
    conn = connect(config)
    try:
        kept = rollup_rows(conn)
        with write_transaction(conn):
            rebuild_rollups(conn)
        assert rollup_rows(conn) == kept
        assert all(kept.values())
    finally:
        conn.close()


# --- writers on separate connections of one process -----------------------------------------------

RACERS, RACE_BATCHES, RACE_EVENTS, RACE_IDS = 6, 25, 60, 1_200
RACE_DAY = date(2026, 3, 2)


def race_event(number: int) -> dict:
    """The one payload of an id, whoever sends it; all within three hours, so that every batch
    adds to the same quarter, hour, day and week rows as the others."""
    rng = random.Random(number)
    instant = datetime(2026, 3, 2, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(3 * 3_600))
    event = {"id": f"r{number}", "timestamp": instant.isoformat(), "modelConfigId": rng.choice(sorted(CONFIGS)),
             "promptTokens": rng.randrange(5000), "completionTokens": rng.randrange(2000),
             "billingSource": rng.choice(["platform", "user"])}
    event["cachedPromptTokens"] = rng.randrange(event["promptTokens"] + 1)
    event["reasoningTokens"] = rng.randrange(event["completionTokens"] + 1)
    if event["modelConfigId"] == "cfg_flat":
        event["cost"] = rng.randint(1, 90_000) / 10**6
    return event


def racer(app, key, number, start, answers):
    """Batches of ids drawn from one shared pool, each in its own order: the same ids and the
    same rollup rows as the other racers, touched in other orders."""
    rng, client = random.Random(number), app.test_client()
    start.wait(WAIT_BOUND_SECONDS)
    for _ in range(RACE_BATCHES):
        batch = [race_event(n) for n in rng.sample(range(RACE_IDS), RACE_EVENTS)]
        response = client.post(EVENTS_PATH, json={"events": batch}, headers=bearer(key))
        answers.append((batch, response.status_code, response.get_json()))


def test_racing_writers_store_each_event_once_without_deadlock(postgres):
    """A UniqueViolation would be a 500, a deadlock or serialization failure a 503 (the busy
    timeout is never reached): every answer must be a 200 that counts each event once."""
    database = postgres.new_schema()
    key = prepare_database(database, FAST_TIMEZONES=FAST)["acme"]
    app = create_app({"TESTING": True, "DATABASE": database, "BUSY_TIMEOUT_MS": NEVER_MS, "FAST_TIMEZONES": FAST})
    client = app.test_client()
    for config_id, config in CONFIGS.items():
        create_config(client, key, config_id, model_id=config["modelId"], provider=config["provider"])
    answers, start = [], threading.Barrier(RACERS)
    threads = [threading.Thread(target=racer, args=(app, key, n, start, answers)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_BOUND_SECONDS)

    assert len(answers) == RACERS * RACE_BATCHES
    assert [(status, body) for _, status, body in answers if status != 200] == []
    assert all(body["accepted"] + body["duplicates"] == len(batch) and body["conflicts"] == 0
               for batch, _, body in answers)
    sent = [event for batch, _, _ in answers for event in batch]
    unique = {event["id"] for event in sent}
    assert sum(body["accepted"] for _, _, body in answers) == len(unique)  # each accepted once, by one batch
    assert len(unique) > RACE_IDS * 0.9 and len(sent) > 2 * len(unique)  # the batches did overlap
    ids = stored_ids(app.config)
    assert sorted(ids) == sorted(unique)
    assert_rollups_equal_a_rebuild(app.config)
    prices = catalogue_prices()
    for granularity, zone in (("hour", "UTC"), ("day", FAST)):
        query = f"startDate={RACE_DAY}&endDate={RACE_DAY}&granularity={granularity}&timezone={zone}"
        body = client.get(f"/v1/model-usage?{query}", headers=bearer(key)).get_json()
        expected = expected_usage(sent, CONFIGS, prices, RACE_DAY, RACE_DAY, granularity, zone)
        assert {name: body[name] for name in ("summary", "usageByModel", "timeSeries")} == \
            {name: expected[name] for name in ("summary", "usageByModel", "timeSeries")}


# --- two hosts, one killed -----------------------------------------------------------------------------

WRITERS, HOST_BATCHES, READERS = 8, 100, 2  # writer c starts on host c % 2
VICTIM, SURVIVOR = 1, 0
KILL_AFTER = WRITERS // 2 * HOST_BATCHES // 2  # the victim's writers' batches acknowledged before it is killed
HOLD_AT = HOST_BATCHES * 3 // 4  # no victim writer sends more than this before the kill


class Hosts:
    """What the clients of both hosts did; when the victim is due to be killed."""

    def __init__(self, bases: list[str]):
        self.bases, self.lock = bases, threading.Lock()
        self.kill_due, self.killed = threading.Event(), threading.Event()
        self.acknowledged: dict[str, dict] = {}  # event id -> event, of every batch a host said it has
        self.batches, self.reads = [0, 0], [0, 0]
        self.failovers = 0
        self.cut_off = {"stored before": 0, "not stored": 0}  # batches whose answer the kill cut off

    def stored(self, host: int, batch: list[dict]) -> None:
        with self.lock:
            self.acknowledged.update((event["id"], event) for event in batch)
            self.batches[host] += 1
            self.check_due()

    def read(self, host: int) -> None:
        with self.lock:
            self.reads[host] += 1
            self.check_due()

    def check_due(self) -> None:
        if self.batches[VICTIM] >= KILL_AFTER and self.reads[VICTIM] >= READERS:
            self.kill_due.set()


class Route:
    """A client's way in: its own host, until that host is killed; then the survivor."""

    def __init__(self, hosts: Hosts, host: int):
        self.hosts, self.host, self.session = hosts, host, requests.Session()

    def call(self, run: Run, method: str, path: str, **kwargs) -> tuple[int, requests.Response, bool]:
        """(the host that answered, its answer, whether an attempt was cut off by the kill)."""
        cut_off = False
        while True:
            host = self.host
            try:
                return host, call(run, self.session, method, self.hosts.bases[host] + path, **kwargs), cut_off
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                if host != VICTIM or not self.hosts.killed.is_set():
                    raise
                self.host, self.session, cut_off = SURVIVOR, requests.Session(), True
                with self.hosts.lock:
                    self.hosts.failovers += 1


def guarded(run: Run, work):
    """A thread's work; anything it raises is a problem the test reports."""
    def target(*args):
        try:
            work(*args)
        except Exception as exc:  # noqa: BLE001 (reported, with its type)
            run.problem(f"{work.__name__}{args[3:4]}: {exc!r}")
    return target


def host_writer(run, hosts, key, client, template):
    """One client's batches and re-sends; an answer cut off by the kill is asked for again
    of the survivor, where the batch is all new or all a duplicate, never part of either."""
    batches, resend_after = planned_batches(client, template, HOST_BATCHES)
    route, headers = Route(hosts, client % 2), bearer(key)
    new = {"accepted": EVENTS, "duplicates": 0, "conflicts": 0}
    again = {"accepted": 0, "duplicates": EVENTS, "conflicts": 0}
    for b, batch in enumerate(batches):
        if b == HOLD_AT and route.host == VICTIM:
            hosts.killed.wait(WAIT_BOUND_SECONDS)  # so the kill always finds this writer with work left
        host, answer, cut_off = route.call(run, "POST", EVENTS_PATH, json={"events": batch}, headers=headers)
        if answer.status_code == 200 and answer.json() in ([new, again] if cut_off else [new]):
            hosts.stored(host, batch)
            if cut_off:
                hosts.cut_off["stored before" if answer.json() == again else "not stored"] += 1
        else:
            run.problem(f"batch {client}/{b}: {answer.status_code} {answer.text[:200]}")
        for old in resend_after.get(b, []):
            _, answer, _ = route.call(run, "POST", EVENTS_PATH, json={"events": batches[old]}, headers=headers)
            if answer.status_code != 200 or answer.json() != again:
                run.problem(f"re-sent batch {client}/{old}: {answer.status_code} {answer.text[:200]}")


def host_reader(run, hosts, key, reader_id, per_batch, writers_done):
    """Polls both hosts in turn (the victim first), each answer whole batches and never fewer
    than the one before, whichever host gave it."""
    routes, seen, polls = [Route(hosts, SURVIVOR), Route(hosts, VICTIM)], 0, 0
    while not writers_done.is_set():
        polls += 1
        params = {"startDate": "2026-03-01", "endDate": "2026-03-07", "granularity": ("day", "hour", "week")[polls % 3]}
        host, answer, _ = routes[polls % 2].call(run, "GET", "/v1/model-usage", params=params, headers=bearer(key))
        if answer.status_code != 200:
            run.problem(f"reader {reader_id}: {answer.status_code} {answer.text[:200]}")
            continue
        hosts.read(host)
        seen = check_report(run, reader_id, answer.json(), per_batch, seen)


@pytest.mark.slow
def test_two_hosts_over_one_database_one_killed_mid_run(postgres, tmp_path):
    """Two gunicorn servers with nothing in common but the database; writers on both, 20% of
    batches sent twice, readers on both; one host is killed with SIGKILL half-way through
    its writers' batches, and they go on at the other. Nothing is lost or stored twice, no
    reader ever sees part of a batch, and the rollups equal a rebuild."""
    database = postgres.new_schema()
    key = prepare_database(database, FAST_TIMEZONES=FAST)["acme"]
    prices = catalogue_prices()
    template = batch_template(random.Random(7))
    per_batch = batch_totals(template, prices)
    run, writers_done = Run(), threading.Event()

    def host(name: str):
        """A server with a folder, a log and an environment of its own."""
        folder = tmp_path / name
        folder.mkdir()
        return gunicorn_host(database, folder / "gunicorn.log", workers=2, workdir=folder, FAST_TIMEZONES=FAST)

    with host("host-a") as a, host("host-b") as b:
        for config_id, config in CONFIGS.items():
            body = {"id": config_id, "modelId": config["modelId"], "provider": config["provider"]}
            response = requests.post(f"{a.base}/v1/model-configs", json=body, headers=bearer(key), timeout=60)
            assert response.status_code == 201
        hosts = Hosts([a.base, b.base])
        readers = [threading.Thread(target=guarded(run, host_reader),
                                    args=(run, hosts, key, r, per_batch, writers_done)) for r in range(READERS)]
        writers = [threading.Thread(target=guarded(run, host_writer), args=(run, hosts, key, c, template))
                   for c in range(WRITERS)]
        for thread in readers + writers:
            thread.start()
        due = hosts.kill_due.wait(WAIT_BOUND_SECONDS)
        hosts.killed.set()
        b.kill()
        for thread in writers:
            thread.join(WAIT_BOUND_SECONDS)
        writers_done.set()
        for thread in readers:
            thread.join(WAIT_BOUND_SECONDS)
        final = final_reports(a.base, key)

    assert due, "the victim's writers never got half-way"
    assert run.problems == []
    assert hosts.failovers >= WRITERS // 2  # every writer of the killed host went on at the other
    assert min(hosts.reads) > 0
    config = {"DATABASE": database, "BUSY_TIMEOUT_MS": 5_000}
    ids = stored_ids(config)
    assert len(ids) == len(set(ids)) == WRITERS * HOST_BATCHES * EVENTS  # nothing stored twice
    assert set(ids) == set(hosts.acknowledged)  # nothing lost, nothing a host did not acknowledge
    assert_reports_are_the_oracle(final, list(hosts.acknowledged.values()), prices)
    assert_rollups_equal_a_rebuild(config)
    print(f"\ntwo hosts: {len(ids)} events, {run.requests} requests, {run.unavailable} answered 503, "
          f"{run.reads} reads ({hosts.reads[SURVIVOR]} from the survivor, {hosts.reads[VICTIM]} from the victim), "
          f"{hosts.failovers} calls moved to the survivor, batches cut off by the kill: {hosts.cut_off}")
