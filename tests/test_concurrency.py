"""Many writers and readers against a real gunicorn with 4 workers, on each engine.

Every batch holds the same 50 (config, tokens, cost, billing source) entries, only
their timestamps differ, so any committed state is k whole batches: a reader that ever
sees a total that is not k times the batch's totals has seen half a batch.
"""
import random
import threading
import time
from datetime import date, datetime, timedelta, timezone

import pytest
import requests

from gunicorn_server import gunicorn
from oracle import event_cost_micros, expected_usage
from support import assert_rollups_equal_a_rebuild, catalogue_names, catalogue_prices, open_database, prepare_database, rows

CLIENTS, BATCHES, EVENTS = 8, 200, 50
RESENT_SHARE = 0.2
READERS = 2
START, END = date(2026, 3, 1), date(2026, 3, 7)
WINDOW_SECONDS = 7 * 86_400
CONFIGS = {
    "cfg_priced": {"modelId": "gpt-4o", "provider": "OpenAI", "modelName": catalogue_names()["gpt-4o"]},
    "cfg_flat": {"modelId": "house-model", "provider": "Acme", "modelName": "house-model"},
    "cfg_free": {"modelId": "free-model", "provider": "Acme", "modelName": "free-model"},
}
RETRY_FOR_S = 300  # a 503 is retried; only a request that never gets through fails


def batch_template(rng: random.Random) -> list[dict]:
    """The 50 payloads every batch repeats (ids and timestamps added per batch)."""
    template = []
    for _ in range(EVENTS):
        config_id = rng.choice(sorted(CONFIGS))
        entry = {"modelConfigId": config_id, "promptTokens": rng.randint(0, 5000), "completionTokens": rng.randint(0, 2000),
                 "billingSource": rng.choice(["platform", "user"])}
        entry["cachedPromptTokens"] = rng.randint(0, entry["promptTokens"])
        entry["reasoningTokens"] = rng.randint(0, entry["completionTokens"])
        if config_id == "cfg_flat":
            entry["cost"] = rng.randint(1, 90_000) / 10**6
        template.append(entry)
    return template


def timestamp(rng: random.Random) -> str:
    """An instant in the window, written with a random UTC offset (or none)."""
    instant = datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(WINDOW_SECONDS),
                                                                    microseconds=rng.choice([0, 0, 500_000, 123_456]))
    if rng.random() < 0.3:
        return instant.replace(tzinfo=None).isoformat()
    offset = timezone(timedelta(minutes=rng.choice([0, -480, 330, 345, 60])))
    return instant.astimezone(offset).isoformat()


def batch_totals(template: list[dict], prices: dict) -> dict:
    """The summary fields of one batch, in integers (micro-dollars for money)."""
    totals = dict.fromkeys(("requests", "platformTokens", "userTokens", "platformCost", "userCost", "promptTokens",
                            "cachedPromptTokens", "reasoningTokens"), 0)
    for entry in template:
        cost, _ = event_cost_micros({**entry, "_model_id": CONFIGS[entry["modelConfigId"]]["modelId"]}, prices)
        source = entry["billingSource"]
        totals["requests"] += 1
        totals[f"{source}Tokens"] += entry["promptTokens"] + entry["completionTokens"]
        totals[f"{source}Cost"] += cost
        for name in ("promptTokens", "cachedPromptTokens", "reasoningTokens"):
            totals[name] += entry[name]
    return totals


class Run:
    """What every thread saw; the test asserts on it at the end."""

    def __init__(self):
        self.lock = threading.Lock()
        self.problems: list[str] = []
        self.requests = 0
        self.unavailable = 0
        self.reads = 0

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def count(self, unavailable: bool) -> None:
        with self.lock:
            self.requests += 1
            self.unavailable += unavailable


def call(run: Run, session: requests.Session, method: str, url: str, **kwargs):
    """Send until the answer is not a 503; anything 5xx but 503 is a problem."""
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        response = session.request(method, url, timeout=120, **kwargs)
        run.count(response.status_code == 503)
        if response.status_code != 503:
            if response.status_code >= 500:
                run.problem(f"{method} {url}: {response.status_code} {response.text[:200]}")
            return response
        if "Retry-After" not in response.headers:
            run.problem(f"{method} {url}: 503 without Retry-After")
        if time.monotonic() > deadline:
            run.problem(f"{method} {url}: still 503 after {RETRY_FOR_S} s")
            return response
        time.sleep(0.05)  # a pause before retrying, as a client would


def planned_batches(client: int, template: list[dict], count: int = BATCHES) -> tuple[list, dict]:
    """A writer's batches (the template with ids and timestamps) and, after which batch, the
    earlier ones it sends again."""
    rng = random.Random(1000 + client)
    batches = [[{**entry, "id": f"c{client}-b{b}-e{i}", "timestamp": timestamp(rng)} for i, entry in enumerate(template)]
               for b in range(count)]
    resend_after: dict[int, list[int]] = {}
    for b in rng.sample(range(count), int(count * RESENT_SHARE)):
        resend_after.setdefault(min(count - 1, b + rng.randint(0, 20)), []).append(b)
    return batches, resend_after


def writer(run, base, key, client, template, sent):
    batches, resend_after = planned_batches(client, template)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{base}/v1/model-usage/events"
    for b, events in enumerate(batches):
        answer = call(run, session, "POST", url, json={"events": events}, headers=headers)
        if answer.status_code != 200 or answer.json() != {"accepted": EVENTS, "duplicates": 0, "conflicts": 0}:
            run.problem(f"batch {client}/{b}: {answer.status_code} {answer.text[:200]}")
        for old in resend_after.get(b, []):
            again = call(run, session, "POST", url, json={"events": batches[old]}, headers=headers)
            if again.status_code != 200 or again.json() != {"accepted": 0, "duplicates": EVENTS, "conflicts": 0}:
                run.problem(f"re-sent batch {client}/{old}: {again.status_code} {again.text[:200]}")
    with run.lock:
        sent.extend(event for events in batches for event in events)
        sent.extend(event for b in sorted(resend_after) for old in resend_after[b] for event in batches[old])


def reader(run, base, key, per_batch, writers_done, reader_id):
    """Poll the usage report; every answer must be whole batches and agree with itself."""
    session = requests.Session()
    headers = {"Authorization": f"Bearer {key}"}
    seen = 0
    granularities = ["day", "hour", "week"]
    polls = 0
    while polls == 0 or not writers_done.is_set():  # at least one read, however soon the writers finish
        params = {"startDate": START.isoformat(), "endDate": END.isoformat(), "granularity": granularities[polls % 3]}
        polls += 1
        answer = call(run, session, "GET", f"{base}/v1/model-usage", params=params, headers=headers)
        if answer.status_code != 200:
            run.problem(f"reader {reader_id}: {answer.status_code} {answer.text[:200]}")
            continue
        seen = check_report(run, reader_id, answer.json(), per_batch, seen)


def check_report(run, reader_id, body, per_batch, seen: int) -> int:
    """An answer must hold whole batches, agree with itself and never go back from the `seen`
    requests of this reader's last answer; returns its requests."""
    summary = body["summary"]
    whole, rest = divmod(summary["totalRequests"], per_batch["requests"])
    observed = {
        "requests": summary["totalRequests"],
        "platformTokens": summary["platformTokens"],
        "userTokens": summary["userTokens"],
        "platformCost": round(summary["platformCost"] * 10**6),
        "userCost": round(summary["userCost"] * 10**6),
        "promptTokens": summary["promptTokens"],
        "cachedPromptTokens": summary["cachedPromptTokens"],
        "reasoningTokens": summary["reasoningTokens"],
    }
    if rest or observed != {name: whole * value for name, value in per_batch.items()}:
        run.problem(f"reader {reader_id} saw part of a batch: {observed}")
    if sum(point["requests"] for point in body["timeSeries"]) != summary["totalRequests"]:
        run.problem(f"reader {reader_id}: time series disagrees with the summary")
    if sum(model["requestCount"] for model in body["usageByModel"].values()) != summary["totalRequests"]:
        run.problem(f"reader {reader_id}: models disagree with the summary")
    if summary["totalRequests"] < seen:
        run.problem(f"reader {reader_id}: totals went back from {seen} to {summary['totalRequests']}")
    with run.lock:
        run.reads += 1
    return summary["totalRequests"]


def final_reports(base: str, key: str, get=None) -> dict:
    """The report by day and hour in UTC, and by day at +5:30 (from the local rollups).
    `get(url, **kwargs)` sends each request (default: once, with requests.get)."""
    get = get or (lambda url, **kwargs: requests.get(url, timeout=60, **kwargs))
    final = {}
    for granularity, zone in (("day", "UTC"), ("hour", "UTC"), ("day", "Asia/Kolkata")):
        params = {"startDate": START.isoformat(), "endDate": END.isoformat(), "granularity": granularity,
                  "timezone": zone}
        final[granularity, zone] = get(f"{base}/v1/model-usage", params=params,
                                       headers={"Authorization": f"Bearer {key}"}).json()
    return final


def assert_reports_are_the_oracle(final: dict, sent: list[dict], prices: dict) -> None:
    for (granularity, zone), body in final.items():
        expected = expected_usage(sent, CONFIGS, prices, START, END, granularity, zone)
        assert body["summary"] == expected["summary"]
        assert body["usageByModel"] == expected["usageByModel"]
        assert body["timeSeries"] == expected["timeSeries"]


@pytest.mark.slow
@pytest.mark.parametrize("busy_timeout_ms", [5000, 10], ids=["default-busy-timeout", "short-busy-timeout"])
def test_writers_and_readers_under_gunicorn(engine, new_database, tmp_path, busy_timeout_ms):
    """With the default busy timeout writers wait their turn; with a short one many get a
    503, and every one of those must have stored nothing and succeed when retried. The
    workers are separate processes over one database: exactly once, whole batches and
    rollups equal to a rebuild hold across them."""
    database = new_database(engine)
    key = prepare_database(database)["acme"]
    prices = catalogue_prices()
    template = batch_template(random.Random(7))
    per_batch = batch_totals(template, prices)
    run, sent, writers_done = Run(), [], threading.Event()
    started = time.monotonic()
    with gunicorn(database, tmp_path / "gunicorn.log", workers=4, BUSY_TIMEOUT_MS=busy_timeout_ms,
                  FAST_TIMEZONES="Asia/Kolkata") as base:  # every worker registers +5:30 at start
        setup = requests.Session()  # a 503 is retried here too: workers still starting hold the write lock a moment
        for config_id, config in CONFIGS.items():
            body = {"id": config_id, "displayName": config_id, "modelId": config["modelId"], "provider": config["provider"]}
            assert call(run, setup, "POST", f"{base}/v1/model-configs", json=body,
                        headers={"Authorization": f"Bearer {key}"}).status_code == 201
        writers = [threading.Thread(target=writer, args=(run, base, key, c, template, sent)) for c in range(CLIENTS)]
        readers = [threading.Thread(target=reader, args=(run, base, key, per_batch, writers_done, r)) for r in range(READERS)]
        for thread in writers + readers:
            thread.start()
        for thread in writers:
            thread.join()
        writers_done.set()
        for thread in readers:
            thread.join()
        final = final_reports(base, key, get=lambda url, **kwargs: call(run, setup, "GET", url, **kwargs))
    elapsed = time.monotonic() - started

    assert run.problems == []
    unique = {event["id"] for event in sent}
    assert len(unique) == CLIENTS * BATCHES * EVENTS
    assert len(sent) == CLIENTS * BATCHES * EVENTS * (1 + RESENT_SHARE)
    assert_reports_are_the_oracle(final, sent, prices)
    with open_database(database) as conn:
        assert rows(conn, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM usage_event") == [(len(unique),) * 2]
        assert assert_rollups_equal_a_rebuild(conn) == [19_800]  # Asia/Kolkata's local days and hours too
    assert run.reads > 0
    print(f"\nconcurrency ({engine}, busy timeout {busy_timeout_ms} ms): {len(unique)} unique events, {len(sent)} sent, {run.requests} requests, "
          f"{run.unavailable} answered 503 ({run.unavailable / run.requests:.2%}), {run.reads} reads, {elapsed:.1f} s")
