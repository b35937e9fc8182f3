"""Budgets under a real `gunicorn wsgi:app`, on each engine: 8 writers racing through 4 workers
cross every threshold with exactly one alert each, delivered once by the workers' own threads;
and an alert raised just before the server is killed is delivered, once, by the next one."""
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from budget_support import Receiver, documented_verify
from gunicorn_server import gunicorn, gunicorn_host
from support import prepare_database
from test_concurrency import Run, call

WRITERS, BATCHES, EVENTS = 8, 25, 20
COST_MICROS = 1_000  # per event: 8 x 25 x 20 events are $4.00
THRESHOLDS = list(range(10, 101, 10))
WAIT_S = 300  # only bounds a failure: the states are polled until they are reached
HOOKS = {"WEBHOOK_ALLOW": "127.0.0.1", "WEBHOOK_POLL_SECONDS": 0.05, "WEBHOOK_BACKOFF_SECONDS": "0,0,0"}


def recent() -> str:
    """An instant in every current period: a second ago."""
    return (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()


def writer(run, base, key, client):
    session, headers = requests.Session(), {"Authorization": f"Bearer {key}"}
    sent = []
    for b in range(BATCHES):
        events = [{"id": f"w{client}-{b}-{i}", "timestamp": recent(), "modelConfigId": "cfg_a", "promptTokens": 1,
                   "completionTokens": 1, "cost": COST_MICROS / 10**6} for i in range(EVENTS)]
        answer = call(run, session, "POST", f"{base}/v1/model-usage/events", json={"events": events}, headers=headers)
        if answer.status_code != 200 or answer.json()["accepted"] != EVENTS:
            run.problem(f"batch {client}/{b}: {answer.status_code} {answer.text[:200]}")
        sent.append(events)
        if b % 5 == 4:  # re-sent: duplicates, which must raise nothing
            again = call(run, session, "POST", f"{base}/v1/model-usage/events", json={"events": sent[b - 2]},
                         headers=headers)
            if again.status_code != 200 or again.json()["duplicates"] != EVENTS:
                run.problem(f"re-sent batch {client}/{b - 2}: {again.status_code} {again.text[:200]}")


def wait_for_states(run, session, base, key, budget_id, count) -> list[dict]:
    """The budget's alerts once there are `count`, none pending."""
    deadline = time.monotonic() + WAIT_S
    while True:
        body = call(run, session, "GET", f"{base}/v1/budgets/{budget_id}/alerts",
                    headers={"Authorization": f"Bearer {key}"}).json()
        if len(body["data"]) == count and all(alert["delivery"]["state"] != "pending" for alert in body["data"]):
            return body["data"]
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def setup(run, base, key, receiver, amount, **fields) -> dict:
    session, headers = requests.Session(), {"Authorization": f"Bearer {key}"}
    assert call(run, session, "POST", f"{base}/v1/model-configs", headers=headers, json={
        "id": "cfg_a", "modelId": "gpt-4o", "provider": "OpenAI"}).status_code == 201
    answer = call(run, session, "POST", f"{base}/v1/budgets", headers=headers, json={
        "name": "team", "amount": amount, "period": "month", "webhookUrl": receiver.url(), **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.mark.slow
def test_racing_writers_raise_each_threshold_once_and_the_workers_deliver_each_once(engine, new_database, tmp_path):
    database = new_database(engine)
    key = prepare_database(database)["acme"]
    run = Run()
    total = WRITERS * BATCHES * EVENTS * COST_MICROS
    with Receiver() as receiver, gunicorn(database, tmp_path / "gunicorn.log", workers=4, **HOOKS) as base:
        budget = setup(run, base, key, receiver, total / 10**6 / 1.2, thresholds=THRESHOLDS, timezone="America/New_York")
        threads = [threading.Thread(target=writer, args=(run, base, key, client)) for client in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        alerts = wait_for_states(run, requests.Session(), base, key, budget["id"], len(THRESHOLDS))
        received = receiver.wait_for(len(THRESHOLDS))
    assert run.problems == []
    assert sorted(alert["threshold"] for alert in alerts) == THRESHOLDS
    amount = round(budget["amount"] * 10**6)
    for alert in alerts:
        assert alert["delivery"]["state"] == "delivered" and alert["delivery"]["attempts"] == 1
        assert round(alert["spent"] * 10**6) * 100 >= amount * alert["threshold"]
    ids = sorted(json.loads(request["body"])["id"] for request in received)
    assert ids == sorted(alert["id"] for alert in alerts)  # each delivered once, by one worker
    verify = documented_verify()
    for request in received:
        verify(budget["webhookSecret"], request["headers"]["Usage-Server-Signature"], request["body"])


@pytest.mark.slow
def test_an_alert_pending_when_the_server_is_killed_is_delivered_once_after_a_restart(engine, new_database, tmp_path):
    database = new_database(engine)
    key = prepare_database(database)["acme"]
    run, session = Run(), requests.Session()
    headers = {"Authorization": f"Bearer {key}"}
    with Receiver() as receiver:
        # a server whose workers would first look for deliveries in an hour: killed before that
        with gunicorn_host(database, tmp_path / "first.log", workers=2, **{**HOOKS, "WEBHOOK_POLL_SECONDS": 3600}) as host:
            budget = setup(run, host.base, key, receiver, 1, thresholds=[100])
            event = {"id": "big", "timestamp": recent(), "modelConfigId": "cfg_a", "promptTokens": 1,
                     "completionTokens": 1, "cost": 2}
            assert call(run, session, "POST", f"{host.base}/v1/model-usage/events", json={"events": [event]},
                        headers=headers).status_code == 200
            [alert] = call(run, session, "GET", f"{host.base}/v1/budgets/{budget['id']}/alerts", headers=headers).json()["data"]
            assert alert["delivery"]["state"] == "pending"
            host.kill()
        assert receiver.requests == []
        with gunicorn(database, tmp_path / "second.log", workers=2, **HOOKS) as base:
            [alert] = wait_for_states(run, session, base, key, budget["id"], 1)
            [request] = receiver.wait_for(1)
    assert run.problems == []
    assert alert["delivery"]["state"] == "delivered" and alert["delivery"]["attempts"] == 1
    payload = documented_verify()(budget["webhookSecret"], request["headers"]["Usage-Server-Signature"], request["body"])
    assert payload["id"] == alert["id"] and payload["threshold"] == 100 and payload["spent"] == 2.0
    assert len(receiver.requests) == 1
