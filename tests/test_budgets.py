"""Budgets: the API, the current period's figures against a plain-Python oracle (and against
GET /v1/model-usage), alerts raised exactly once in the write transaction, and webhooks
delivered in process (deliver_due, no thread, no clock) with retries, signatures and safe
destinations. Every test runs on both engines."""
import gzip
import json
import logging
import shutil
import socket
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from budget_support import Receiver, documented_verify
from conftest import assert_error, bearer, create_config, post_events
from usage_server import budgets, create_app, webhooks
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

UTC = timezone.utc
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASE_0_1_0 = FIXTURES / "release-0.1.0.sqlite"
RECORDED = json.loads(gzip.decompress((FIXTURES / "release-0.1.0.json.gz").read_bytes()))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def clock(monkeypatch):
    """Pin the budgets' "now"; set `clock.now` to move it."""

    class Clock:
        now = at("2026-03-18T15:30:00Z")

    monkeypatch.setattr(budgets, "utc_now", lambda: Clock.now)
    return Clock


@pytest.fixture
def key(client, make_key):
    raw = make_key("acme")
    create_config(client, raw, "cfg_a")
    create_config(client, raw, "cfg_b", model_id="claude-3-5-sonnet", provider="Anthropic")
    return raw


def event(event_id, instant: datetime, cost_micros: int, config_id="cfg_a") -> dict:
    return {"id": event_id, "timestamp": iso(instant), "modelConfigId": config_id, "promptTokens": 10,
            "completionTokens": 5, "cost": cost_micros / 10**6}


def create_budget(client, key, **fields) -> dict:
    body = {"name": "team", "amount": 10, "period": "day", "timezone": "UTC", **fields}
    body = {name: value for name, value in body.items() if value is not None}  # None: left out
    response = client.post("/v1/budgets", json=body, headers=bearer(key))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def get_json(client, key, path) -> dict:
    response = client.get(path, headers=bearer(key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def alerts(client, key, budget_id) -> list[dict]:
    body = get_json(client, key, f"/v1/budgets/{budget_id}/alerts")
    assert body["total"] == len(body["data"])
    return body["data"]


# --- the current period against an oracle -----------------------------------------------------

# (period, zone, now, the period's bounds written out by hand): days, weeks and months in
# zones with daylight saving, a 24.5-hour day, a quarter-hour offset.
PERIODS = [
    ("day", "America/New_York", "2026-03-08T15:00:00Z", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"),  # 23 h
    ("day", "Australia/Lord_Howe", "2026-04-05T03:00:00Z", "2026-04-04T13:00:00Z", "2026-04-05T13:30:00Z"),  # 24.5 h
    ("day", "Asia/Kathmandu", "2026-03-18T15:30:00Z", "2026-03-17T18:15:00Z", "2026-03-18T18:15:00Z"),
    ("week", "Europe/London", "2026-03-29T12:00:00Z", "2026-03-23T00:00:00Z", "2026-03-29T23:00:00Z"),  # ends on a DST day
    ("week", "America/New_York", "2026-11-01T12:00:00Z", "2026-10-26T04:00:00Z", "2026-11-02T05:00:00Z"),  # 169 h
    ("month", "America/New_York", "2026-03-18T15:30:00Z", "2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z"),
    ("month", "Pacific/Chatham", "2026-04-05T00:00:00Z", "2026-03-31T10:15:00Z", "2026-04-30T11:15:00Z"),  # DST ends Apr 5
    ("month", "UTC", "2026-02-10T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
]


def events_around(start: datetime, end: datetime) -> list[dict]:
    """Events just outside, on and inside both bounds, over two configs, each with its own cost."""
    instants = [start - timedelta(seconds=1), start, start + timedelta(minutes=7), start + (end - start) / 2,
                end - timedelta(microseconds=1), end, end + timedelta(hours=3), start - timedelta(days=1)]
    return [event(f"e{index}", instant, 1_000_003 * (index + 1) + index, "cfg_a" if index % 3 else "cfg_b")
            for index, instant in enumerate(instants)]


@pytest.mark.parametrize("period, zone, now, start, end", PERIODS, ids=[f"{p[0]}-{p[1]}" for p in PERIODS])
def test_current_period_spent_remaining_forecast_and_crossed_match_the_oracle(client, key, clock, period, zone, now,
                                                                               start, end):
    clock.now = at(now)
    lo, hi = at(start), at(end)
    sent = events_around(lo, hi)
    post_events(client, key, sent)
    for config_id in (None, "cfg_a"):
        inside = [item for item in sent if lo <= at(item["timestamp"]) < hi
                  and config_id in (None, item["modelConfigId"])]
        spent = sum(round(item["cost"] * 10**6) for item in inside)
        assert spent > 0
        amount = spent * 100 // 85 + 1  # 50 and 80 reached, 100 not
        budget = create_budget(client, key, period=period, timezone=zone, amount=amount / 10**6,
                               modelConfigId=config_id)
        current = budget["current"]
        assert (current["start"], current["end"]) == (start, end)
        assert current["spent"] == spent / 10**6
        assert current["remaining"] == (amount - spent) / 10**6
        assert current["crossed"] == [threshold for threshold in (50, 80, 100) if spent * 100 >= amount * threshold]
        assert current["crossed"] == [50, 80]
        assert current["percentUsed"] == round(spent * 100 / amount, 2)
        elapsed_us = (at(now) - lo) // timedelta(microseconds=1)
        assert current["forecast"] == (spent * ((hi - lo) // timedelta(microseconds=1)) // elapsed_us) / 10**6
        # exactly what GET /v1/model-usage totals for the period's local dates in the zone
        query = {"startDate": lo.astimezone(ZoneInfo(zone)).date().isoformat(),
                 "endDate": (hi.astimezone(ZoneInfo(zone)) - timedelta(days=1)).date().isoformat(), "timezone": zone}
        if config_id:
            query["modelConfigId"] = config_id
        report = client.get("/v1/model-usage", query_string=query, headers=bearer(key)).get_json()
        assert report["summary"]["totalCost"] == current["spent"]
        assert get_json(client, key, f"/v1/budgets/{budget['id']}") == budget
        assert alerts(client, key, budget["id"]) == []  # reached before the budget existed: no alert


# --- the API ------------------------------------------------------------------------------------


def test_create_list_show_delete(client, key, clock):
    made = create_budget(client, key, name="all usage", amount=25.5, period="week", thresholds=[100, 80, 80, 5])
    assert made["thresholds"] == [5, 80, 100] and made["webhookUrl"] is None and "webhookSecret" not in made
    assert made["modelConfigId"] is None and made["createdAt"] == "2026-03-18T15:30:00Z"
    assert made["timezone"] == "UTC" and made["amount"] == 25.5
    default = create_budget(client, key, name="default", modelConfigId="cfg_b", timezone=None)
    assert default["thresholds"] == [50, 80, 100] and default["timezone"] == "UTC"
    listed = get_json(client, key, "/v1/budgets")
    assert listed["total"] == 2 and sorted(listed["data"], key=lambda item: item["name"]) == [made, default]
    response = client.delete(f"/v1/budgets/{made['id']}", headers=bearer(key))
    assert response.status_code == 204 and response.get_data() == b""
    assert_error(client.get(f"/v1/budgets/{made['id']}", headers=bearer(key)), 404, "not_found")
    assert get_json(client, key, "/v1/budgets") == {"data": [default], "total": 1}


def test_timezone_defaults_to_the_servers_default_zone(database, clock):
    app = create_app({"TESTING": True, "DATABASE": database, "DEFAULT_TIMEZONE": "Asia/Kolkata"})
    conn = connect(app.config)
    with write_transaction(conn):
        _, raw = create_key(conn, "acme", ["read", "write"])
    conn.close()
    budget = create_budget(app.test_client(), raw, timezone=None)
    assert budget["timezone"] == "Asia/Kolkata" and budget["current"]["start"] == "2026-03-17T18:30:00Z"


def test_validation_errors_name_each_field(client, key):
    response = client.post("/v1/budgets", headers=bearer(key), json={
        "name": "", "amount": "10", "period": "year", "timezone": "Mars/Olympus", "modelConfigId": "bad id",
        "thresholds": [0, 1001, 1.5], "webhookUrl": "ftp://example.com/x", "extra": 1})
    body = assert_error(response, 400, "invalid_request")
    paths = {item["path"] for item in body["details"]}
    assert paths == {"name", "amount", "period", "timezone", "modelConfigId", "thresholds.0", "thresholds.1",
                     "thresholds.2", "webhookUrl", "extra"}
    for amount in (0, -1, True, 10**10, 0.0000001):
        assert_error(client.post("/v1/budgets", json={"name": "x", "amount": amount, "period": "day"},
                                 headers=bearer(key)), 400, path="amount")
    assert_error(client.post("/v1/budgets", json={"name": "x", "period": "day", "thresholds": []},
                             headers=bearer(key)), 400, path="amount")
    assert_error(client.post("/v1/budgets", json={"name": "x", "amount": 1, "period": "day", "thresholds": []},
                             headers=bearer(key)), 400, path="thresholds")
    assert_error(client.post("/v1/budgets", json={"name": "x", "amount": 1, "period": "day", "modelConfigId": "cfg_zz"},
                             headers=bearer(key)), 400, path="modelConfigId")
    for url in ("http://user:pw@example.com/", "https:///nohost", "http://example.com/#frag", "not a url"):
        assert_error(client.post("/v1/budgets", json={"name": "x", "amount": 1, "period": "day", "webhookUrl": url},
                                 headers=bearer(key)), 400, path="webhookUrl")


def test_another_owners_or_an_unknown_budget_is_a_404(client, key, make_key):
    budget = create_budget(client, key)
    other = make_key("globex")
    for method, path in (("get", ""), ("get", "/alerts"), ("delete", "")):
        for raw, budget_id in ((other, budget["id"]), (key, "bud_unknown"), (key, "x" * 300)):
            response = getattr(client, method)(f"/v1/budgets/{budget_id}{path}", headers=bearer(raw))
            assert_error(response, 404, "not_found")
    assert get_json(client, other, "/v1/budgets") == {"data": [], "total": 0}
    assert get_json(client, key, f"/v1/budgets/{budget['id']}")["id"] == budget["id"]  # not deleted by the other


def test_scopes(client, key, make_key):
    reader = make_key("acme", scopes=("read",))
    assert_error(client.post("/v1/budgets", json={"name": "x", "amount": 1, "period": "day"}, headers=bearer(reader)),
                 403)
    budget = create_budget(client, key)
    assert_error(client.delete(f"/v1/budgets/{budget['id']}", headers=bearer(reader)), 403)
    assert client.get("/v1/budgets", headers=bearer(reader)).status_code == 200
    assert_error(client.get("/v1/budgets"), 401)


# --- alerts -------------------------------------------------------------------------------------


def test_each_threshold_alerts_once_per_period_and_only_for_current_usage(client, key, clock):
    budget = create_budget(client, key, amount=10)  # a UTC day; now 2026-03-18T15:30Z
    today = at("2026-03-18T01:00:00Z")
    post_events(client, key, [event("a", today, 4_000_000)])
    assert alerts(client, key, budget["id"]) == []
    crossing = [event("b", today, 1_500_000)]
    post_events(client, key, crossing)  # 5.50 of 10: 50 %
    assert [alert["threshold"] for alert in alerts(client, key, budget["id"])] == [50]
    assert post_events(client, key, crossing)["duplicates"] == 1  # re-sent: no usage, no alert
    post_events(client, key, [event("old", today - timedelta(days=1), 50_000_000),  # yesterday's period
                              event("later", today + timedelta(days=1), 50_000_000)])  # tomorrow's
    assert [alert["threshold"] for alert in alerts(client, key, budget["id"])] == [50]
    clock.now = at("2026-03-18T16:00:00Z")
    post_events(client, key, [event("c", today, 5_000_000)])  # 10.50: 80 and 100 at once
    raised = alerts(client, key, budget["id"])
    assert [alert["threshold"] for alert in raised] == [100, 80, 50]  # newest first
    assert [alert["spent"] for alert in raised] == [10.5, 10.5, 5.5]
    assert [alert["crossedAt"] for alert in raised] == ["2026-03-18T16:00:00Z"] * 2 + ["2026-03-18T15:30:00Z"]
    assert {alert["periodStart"] for alert in raised} == {"2026-03-18T00:00:00Z"}
    assert all(alert["delivery"] is None for alert in raised)  # no webhook
    assert len({alert["id"] for alert in raised}) == 3
    post_events(client, key, [event("d", today, 90_000_000)])  # nothing new to reach
    assert len(alerts(client, key, budget["id"])) == 3
    assert get_json(client, key, f"/v1/budgets/{budget['id']}")["current"]["crossed"] == [50, 80, 100]
    clock.now = at("2026-03-19T12:00:00Z")  # the next day: a new period
    assert get_json(client, key, f"/v1/budgets/{budget['id']}")["current"]["spent"] == 50.0  # "later" counts now
    post_events(client, key, [event("e", at("2026-03-19T11:00:00Z"), 1_000_000)])
    raised = alerts(client, key, budget["id"])
    assert [(alert["periodStart"], alert["threshold"]) for alert in raised[:3]] == [
        ("2026-03-19T00:00:00Z", 100), ("2026-03-19T00:00:00Z", 80), ("2026-03-19T00:00:00Z", 50)]
    assert len(raised) == 6


def test_thresholds_reached_at_creation_are_crossed_but_raise_no_alert(client, key, clock):
    post_events(client, key, [event("a", at("2026-03-18T01:00:00Z"), 6_000_000)])
    budget = create_budget(client, key, amount=10)
    assert budget["current"]["crossed"] == [50]
    post_events(client, key, [event("b", at("2026-03-18T02:00:00Z"), 100)])  # usage, but 50 % was reached before
    assert alerts(client, key, budget["id"]) == []
    post_events(client, key, [event("c", at("2026-03-18T03:00:00Z"), 2_000_000)])
    assert [alert["threshold"] for alert in alerts(client, key, budget["id"])] == [80]


def test_a_budget_counts_only_its_configuration_and_its_owner(client, key, clock, make_key):
    scoped = create_budget(client, key, amount=1, modelConfigId="cfg_a")
    everything = create_budget(client, key, amount=1)
    post_events(client, key, [event("b", at("2026-03-18T01:00:00Z"), 2_000_000, "cfg_b")])
    assert alerts(client, key, scoped["id"]) == []
    assert len(alerts(client, key, everything["id"])) == 3
    other = make_key("globex")
    create_config(client, other, "cfg_a")
    post_events(client, other, [event("x", at("2026-03-18T01:00:00Z"), 5_000_000)])
    assert alerts(client, key, scoped["id"]) == []
    assert get_json(client, key, f"/v1/budgets/{scoped['id']}")["current"]["spent"] == 0


def test_an_owner_without_budgets_costs_the_batch_no_spent_computation(app, client, key, clock, monkeypatch):
    """raise_budget_alerts reads the owner's budgets and stops when there are none: no spent computed."""
    seen = []
    real = budgets.spent_micros
    monkeypatch.setattr(budgets, "spent_micros", lambda *args: seen.append(args) or real(*args))
    post_events(client, key, [event("a", at("2026-03-18T01:00:00Z"), 1)])
    assert seen == []
    create_budget(client, key)  # the creation computes spent once
    seen.clear()
    post_events(client, key, [event("b", at("2026-03-18T01:00:00Z"), 1)])
    assert len(seen) == 1


# --- webhooks, delivered in process -----------------------------------------------------------------


@pytest.fixture
def hook_app(database):
    """An app that may send webhooks to 127.0.0.1, retrying at once (backoff 0) twice."""
    return create_app({"TESTING": True, "DATABASE": database, "WEBHOOK_ALLOW": "127.0.0.1",
                       "WEBHOOK_BACKOFF_SECONDS": "0,0", "WEBHOOK_TIMEOUT_SECONDS": 1})


@pytest.fixture
def hook_key(hook_app):
    conn = connect(hook_app.config)
    with write_transaction(conn):
        _, raw = create_key(conn, "acme", ["read", "write"])
    conn.close()
    create_config(hook_app.test_client(), raw, "cfg_a")
    return raw


def cross(app, key, receiver, path="/hook", **fields) -> tuple[dict, str]:
    """A budget with a webhook to the receiver, and usage that reaches its one threshold."""
    client = app.test_client()
    made = create_budget(client, key, amount=1, thresholds=[100], webhookUrl=receiver.url(path), **fields)
    post_events(client, key, [event("big", datetime.now(UTC), 2_000_000)])
    return made, made["webhookSecret"]


def test_a_delivery_that_fails_twice_succeeds_on_the_third_attempt_with_a_valid_signature(hook_app, hook_key):
    with Receiver([(500, {}), (503, {}), (200, {})]) as receiver:
        budget, secret = cross(hook_app, hook_key, receiver)
        [alert] = alerts(hook_app.test_client(), hook_key, budget["id"])
        assert alert["delivery"] == {"state": "pending", "attempts": 0, "lastError": None, "deliveredAt": None}
        assert webhooks.deliver_due(hook_app.config) == 3
        requests = receiver.wait_for(3)
    assert len(requests) == 3
    verify = documented_verify()
    payloads = [verify(secret, request["headers"]["Usage-Server-Signature"], request["body"]) for request in requests]
    assert payloads[0] == payloads[1] == payloads[2]
    assert payloads[0] == {
        "type": "budget.threshold_crossed", "id": alert["id"], "budgetId": budget["id"], "budgetName": "team",
        "threshold": 100, "amount": 1.0, "spent": 2.0, "periodStart": alert["periodStart"],
        "periodEnd": budget["current"]["end"], "crossedAt": alert["crossedAt"]}
    assert requests[0]["headers"]["Content-Type"] == "application/json"
    with pytest.raises(ValueError, match="does not match"):
        verify("whsec_wrong", requests[2]["headers"]["Usage-Server-Signature"], requests[2]["body"])
    with pytest.raises(ValueError, match="does not match"):
        verify(secret, requests[2]["headers"]["Usage-Server-Signature"], requests[2]["body"] + b" ")
    timestamp = int(requests[2]["headers"]["Usage-Server-Signature"].split(",")[0][2:])
    with pytest.raises(ValueError, match="older than five minutes"):
        verify(secret, requests[2]["headers"]["Usage-Server-Signature"], requests[2]["body"], now=timestamp + 301)
    [alert] = alerts(hook_app.test_client(), hook_key, budget["id"])
    assert alert["delivery"]["state"] == "delivered" and alert["delivery"]["attempts"] == 3
    assert alert["delivery"]["deliveredAt"] is not None
    assert webhooks.deliver_due(hook_app.config) == 0  # nothing left to deliver


def test_a_receiver_that_never_answers_ends_failed_after_the_last_attempt(hook_app, hook_key):
    with Receiver([(None, {})]) as receiver:
        budget, _ = cross(hook_app, hook_key, receiver)
        assert webhooks.deliver_due(hook_app.config) == 3  # 1 + two retries; each waits out the 1 s timeout
        assert len(receiver.wait_for(3)) == 3
    [alert] = alerts(hook_app.test_client(), hook_key, budget["id"])
    assert alert["delivery"]["state"] == "failed" and alert["delivery"]["attempts"] == 3
    assert "timed out" in alert["delivery"]["lastError"] and alert["delivery"]["deliveredAt"] is None


def test_redirects_are_not_followed(hook_app, hook_key):
    with Receiver([(302, {"Location": "/elsewhere"})]) as receiver:
        budget, _ = cross(hook_app, hook_key, receiver)
        webhooks.deliver_due(hook_app.config)
        requests = receiver.wait_for(3)
    assert [request["path"] for request in requests] == ["/hook"] * 3
    [alert] = alerts(hook_app.test_client(), hook_key, budget["id"])
    assert alert["delivery"]["state"] == "failed" and alert["delivery"]["lastError"].startswith("HTTP 302")


def test_first_retries_within_three_minutes_and_later_ones_over_an_hour():
    delays = webhooks.backoff(webhooks.DEFAULTS)
    starts = [sum(delays[:index]) for index in range(len(delays) + 1)]  # the attempts' offsets from the first
    assert starts[2] <= 180 and starts[-1] - starts[2] >= 3600


def test_two_deliverers_at_once_deliver_each_alert_once(hook_app, hook_key):
    client = hook_app.test_client()
    with Receiver() as receiver:
        made = [create_budget(client, hook_key, name=f"b{index}", amount=1, thresholds=[10, 20, 30],
                              webhookUrl=receiver.url()) for index in range(4)]
        post_events(client, hook_key, [event("big", datetime.now(UTC), 2_000_000)])
        threads = [threading.Thread(target=webhooks.deliver_due, args=(hook_app.config,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        requests = receiver.wait_for(12)
    ids = [json.loads(request["body"])["id"] for request in requests]
    assert len(ids) == len(set(ids)) == 12
    for budget in made:
        assert {alert["delivery"]["state"] for alert in alerts(client, hook_key, budget["id"])} == {"delivered"}


# --- safe destinations ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1/h", "http://localhost:8080/h", "http://10.1.2.3/h",
                                 "https://192.168.0.1/h", "http://169.254.169.254/latest", "http://[::1]/h",
                                 "http://[::ffff:127.0.0.1]/h", "http://[fe80::1]/h", "http://0.0.0.0/h",
                                 "http://172.16.5.4/h", "http://[fd00::1]/h"])
def test_private_loopback_and_link_local_destinations_are_refused(client, key, url):
    response = client.post("/v1/budgets", json={"name": "x", "amount": 1, "period": "day", "webhookUrl": url},
                           headers=bearer(key))
    body = assert_error(response, 400, "invalid_request", path="webhookUrl")
    assert "USAGE_SERVER_WEBHOOK_ALLOW" in body["error"]


def test_a_host_with_any_private_address_is_refused_and_a_public_one_accepted(client, key, monkeypatch):
    answers = {"mixed.example": ["93.184.216.34", "10.0.0.8"], "public.example": ["93.184.216.34"],
               "mapped.example": ["::ffff:192.168.1.1"]}

    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in answers[host]]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake)
    for host in ("mixed.example", "mapped.example"):
        response = client.post("/v1/budgets", headers=bearer(key), json={
            "name": "x", "amount": 1, "period": "day", "webhookUrl": f"https://{host}/h"})
        assert_error(response, 400, path="webhookUrl")
    made = create_budget(client, key, webhookUrl="https://public.example/h")
    assert made["webhookUrl"] == "https://public.example/h" and made["webhookSecret"].startswith("whsec_")


def test_an_allowed_host_is_accepted(hook_app, hook_key):
    with Receiver() as receiver:
        made = create_budget(hook_app.test_client(), hook_key, webhookUrl=receiver.url())
    assert made["webhookUrl"] == receiver.url()


def test_a_dns_answer_that_turns_private_after_the_check_is_not_connected_to(hook_app, hook_key, monkeypatch):
    real = socket.getaddrinfo
    answer = ["93.184.216.34"]

    def fake(host, port, *args, **kwargs):
        if host != "hooks.example":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[0], port))]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake)
    with Receiver() as receiver:
        client = hook_app.test_client()
        budget = create_budget(client, hook_key, amount=1, thresholds=[100],
                               webhookUrl=receiver.url(host="hooks.example"))
        post_events(client, hook_key, [event("big", datetime.now(UTC), 2_000_000)])
        answer[0] = "127.0.0.1"  # rebinding: the receiver's address, not allowed under this name
        assert webhooks.deliver_due(hook_app.config) == 3
        assert receiver.requests == []
    [alert] = alerts(client, hook_key, budget["id"])
    assert alert["delivery"]["state"] == "failed" and "loopback" in alert["delivery"]["lastError"]


def test_the_secret_is_shown_once_and_never_logged(hook_app, hook_key, caplog):
    caplog.set_level(logging.DEBUG)
    client = hook_app.test_client()
    with Receiver([(500, {})]) as receiver:
        made, secret = cross(hook_app, hook_key, receiver)
        webhooks.deliver_due(hook_app.config)
    for body in (get_json(client, hook_key, f"/v1/budgets/{made['id']}"), get_json(client, hook_key, "/v1/budgets"),
                 get_json(client, hook_key, f"/v1/budgets/{made['id']}/alerts")):
        assert secret not in json.dumps(body) and "webhookSecret" not in json.dumps(body)
    assert "webhook delivery" in caplog.text and secret not in caplog.text


def test_a_lease_holds_off_other_processes_until_it_expires(hook_app, hook_key):
    """A process that claimed a delivery and died: its lease keeps others off until it ends."""
    client = hook_app.test_client()
    with Receiver() as receiver:
        for name in ("held", "expired", "free"):
            create_budget(client, hook_key, name=name, amount=1, thresholds=[100], webhookUrl=receiver.url())
        post_events(client, hook_key, [event("big", datetime.now(UTC), 2_000_000)])
        dead = connect(hook_app.config)
        held, _ = webhooks.claim(dead, {**hook_app.config, "WEBHOOK_LEASE_SECONDS": 3600})
        expired, _ = webhooks.claim(dead, {**hook_app.config, "WEBHOOK_LEASE_SECONDS": 0})  # ends at once
        dead.close()
        assert webhooks.deliver_due(hook_app.config) == 2
        delivered = {json.loads(request["body"])["id"] for request in receiver.wait_for(2)}
    assert expired in delivered and held not in delivered and len(delivered) == 2


def test_a_release_0_1_0_database_takes_budgets_after_its_upgrade(tmp_path, clock):
    """The upgraded fixture: a budget's spent is the report's total for the month, and new
    usage raises its alert."""
    path = tmp_path / "usage.sqlite"
    shutil.copyfile(RELEASE_0_1_0, path)
    client = create_app({"TESTING": True, "DATABASE": str(path), "FAST_TIMEZONES": RECORDED["fastTimezones"]}).test_client()
    key = RECORDED["keys"]["acme"]
    clock.now = datetime.fromisoformat(RECORDED["now"])
    report = client.get("/v1/model-usage", query_string={"startDate": "2026-03-01", "endDate": "2026-03-31",
                                                          "timezone": "Asia/Kolkata"}, headers=bearer(key)).get_json()
    spent = round(report["summary"]["totalCost"] * 10**6)
    budget = create_budget(client, key, period="month", timezone="Asia/Kolkata", amount=(spent + 1_000_000) / 10**6,
                           thresholds=[100])
    assert budget["current"]["spent"] == spent / 10**6 and budget["current"]["crossed"] == []
    post_events(client, key, [event("after-upgrade", clock.now, 1_000_000)])
    assert [alert["threshold"] for alert in alerts(client, key, budget["id"])] == [100]


def test_copy_to_carries_budgets_alerts_and_pending_deliveries(hook_app, hook_key, tmp_path, clock):
    clock.now = datetime.now(UTC)  # one instant for both answers' forecasts
    client = hook_app.test_client()
    with Receiver() as receiver:
        budget, _ = cross(hook_app, hook_key, receiver)
    target = str(tmp_path / "copy.sqlite")
    result = hook_app.test_cli_runner().invoke(args=["copy-to", target])
    assert result.exit_code == 0, result.output
    assert "budget: 1 new of 1" in result.output and "webhook_delivery: 1 new of 1" in result.output
    copied = create_app({"TESTING": True, "DATABASE": target}).test_client()
    assert get_json(copied, hook_key, f"/v1/budgets/{budget['id']}") == get_json(client, hook_key, f"/v1/budgets/{budget['id']}")
    assert alerts(copied, hook_key, budget["id"]) == alerts(client, hook_key, budget["id"])
