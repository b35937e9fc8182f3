"""Request ids, the JSON request log and Prometheus metrics: the log line of each request holds
what it did, keys never; the metrics scraped from 2 gunicorn workers add up to what was sent."""
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import assert_error, bearer, create_config, post_events
from gunicorn_server import gunicorn
from support import prepare_database
from usage_server import api, create_app, observability
from usage_server.storage import connect


@pytest.fixture
def logged():
    """The JSON request lines logged during the test, parsed."""
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(record.getMessage()))

    handler = Keep()
    observability.request_log.addHandler(handler)
    yield lines
    observability.request_log.removeHandler(handler)


def event(event_id, **extra):
    return {"id": event_id, "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 10,
            "completionTokens": 5, **extra}


def test_every_answer_carries_a_request_id_sane_incoming_ones_kept(client):
    first, second = client.get("/health"), client.get("/health")
    ids = [response.headers["X-Request-Id"] for response in (first, second)]
    assert ids[0] != ids[1] and all(len(value) == 32 for value in ids)
    assert client.get("/health", headers={"X-Request-Id": "lb-7f3a:2.x"}).headers["X-Request-Id"] == "lb-7f3a:2.x"
    for insane in ("a" * 129, "two words", "<script>", "é"):
        kept = client.get("/health", headers={"X-Request-Id": insane}).headers["X-Request-Id"]
        assert kept != insane and len(kept) == 32
    assert_error(client.get("/no/such/route", headers={"X-Request-Id": "r-404"}), 404).keys()
    assert client.get("/no/such/route", headers={"X-Request-Id": "r-404"}).headers["X-Request-Id"] == "r-404"


def test_one_json_line_per_request_with_owner_events_and_no_key(client, make_key, logged, app):
    key = make_key()
    create_config(client, key, "cfg_a")
    logged.clear()
    response = client.post("/v1/model-usage/events", json={"events": [event("a"), event("b"), event("a")]},
                           headers={**bearer(key), "X-Request-Id": "batch-1"})
    assert response.status_code == 200
    client.get("/v1/model-usage", query_string={"period": "last_7_days", "timezone": "UTC"}, headers=bearer(key))
    refused = client.get(f"/v1/model-usage?period=today&api_key={key}&note={key}", headers=bearer(key))
    assert refused.status_code == 400
    client.get(f"/v1/model-usage/{key}", headers=bearer(key))
    assert [line["status"] for line in logged] == [200, 200, 400, 404]
    post, read, with_key, key_path = logged
    conn = connect(app.config)
    owner_id = conn.execute("SELECT id FROM owner WHERE name = 'acme'").fetchone()[0]
    conn.close()
    assert post["request_id"] == "batch-1" and post["method"] == "POST" and post["events_accepted"] == 2
    assert post["path"] == "/v1/model-usage/events" and post["owner_id"] == read["owner_id"] == owner_id
    assert read["path"] == "/v1/model-usage?period=last_7_days&timezone=UTC" and "events_accepted" not in read
    assert with_key["path"] == "/v1/model-usage?period=today&api_key=[removed]&note=[removed]"
    assert key_path["path"] == "/v1/model-usage/[removed]"
    assert all(isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0 for line in logged)
    assert key not in json.dumps(logged)


def test_an_error_is_logged_with_the_request_id_it_answered_with(client, monkeypatch, caplog, logged):
    monkeypatch.setattr(api, "engine_status", lambda db: 1 / 0)
    response = client.get("/health", headers={"X-Request-Id": "broken-1"})
    assert_error(response, 500, "internal_error")
    assert response.headers["X-Request-Id"] == "broken-1"
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == \
        ["unexpected error (request broken-1)"]
    assert logged[-1]["request_id"] == "broken-1" and logged[-1]["status"] == 500


def test_the_request_log_can_be_turned_off(database, logged):
    app = create_app({"TESTING": True, "DATABASE": database, "REQUEST_LOG": "off"})
    assert app.test_client().get("/health").headers["X-Request-Id"]
    assert logged == []
    with pytest.raises(ValueError, match="REQUEST_LOG"):
        create_app({"TESTING": True, "DATABASE": database, "REQUEST_LOG": "yaml"})


def test_metrics_are_off_by_default_and_may_need_a_token(client, database):
    assert_error(client.get("/metrics"), 404)
    app = create_app({"TESTING": True, "DATABASE": database, "METRICS": "on", "METRICS_TOKEN": "s3cret"})
    metrics = app.test_client()
    assert_error(metrics.get("/metrics"), 401)
    assert_error(metrics.get("/metrics", headers=bearer("wrong")), 401)
    response = metrics.get("/metrics", headers=bearer("s3cret"))
    assert response.status_code == 200 and response.mimetype == "text/plain"


def samples(text: str) -> dict:
    """(name, sorted labels) -> value of every sample in a scrape."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_database_gauges(database, make_key):
    app = create_app({"TESTING": True, "DATABASE": database, "METRICS": True})
    client = app.test_client()
    key = make_key()
    create_config(client, key, "cfg_a")
    empty = samples(client.get("/metrics").get_data(as_text=True))
    assert empty[("usage_server_database_bytes", ())] > 0
    assert empty[("usage_server_newest_event_age_seconds", ())] != empty[("usage_server_newest_event_age_seconds", ())]
    post_events(client, key, [event("old", timestamp="2026-01-01T00:00:00Z"), event("new")])
    before = time.time()
    age = samples(client.get("/metrics").get_data(as_text=True))[("usage_server_newest_event_age_seconds", ())]
    newest = 1_773_828_000  # 2026-03-18T10:00:00Z
    assert before - newest <= age <= time.time() - newest


@pytest.mark.sqlite_only
@pytest.mark.slow
def test_metrics_from_two_gunicorn_workers_add_up_to_what_was_sent(database, tmp_path):
    key = prepare_database(database)["acme"]
    with gunicorn(database, tmp_path / "gunicorn.log", workers=2, METRICS="on") as base, \
            ThreadPoolExecutor(8) as pool:
        session_headers = bearer(key)
        response = requests.post(f"{base}/v1/model-configs", headers=session_headers, timeout=60,
                                 json={"id": "cfg_a", "modelId": "gpt-4o", "provider": "OpenAI"})
        assert response.status_code == 201

        def post(batch):
            return requests.post(f"{base}/v1/model-usage/events", json={"events": batch},
                                 headers=session_headers, timeout=60).status_code

        def read(number):
            return requests.get(f"{base}/v1/model-usage", params={"period": "last_7_days"},
                                headers=session_headers, timeout=60).status_code

        batches = [[event(f"e{number}-{index}") for index in range(5)] for number in range(40)]
        assert list(pool.map(post, batches)) == [200] * 40  # 200 accepted
        resent = [[event(f"e{number}-0"), event(f"e{number}-1", promptTokens=11)] for number in range(10)]
        assert list(pool.map(post, resent)) == [200] * 10  # 20 duplicates, 10 of them conflicts
        bad = [[event(f"x{number}", promptTokens=-1)] for number in range(7)]
        assert list(pool.map(post, bad)) == [400] * 7
        assert list(pool.map(read, range(60))) == [200] * 60
        missing = requests.get(f"{base}/no/such/{key}", timeout=60)
        assert missing.status_code == 404
        scraped = [requests.get(f"{base}/metrics", timeout=60).text for _ in range(4)]  # either worker answers
    for text in scraped:
        found = samples(text)
        assert found[("usage_server_requests_total", (("endpoint", "/v1/model-usage"), ("method", "GET"),
                                                       ("status", "200")))] == 60
        assert found[("usage_server_requests_total", (("endpoint", "/v1/model-usage/events"), ("method", "POST"),
                                                       ("status", "200")))] == 50
        assert found[("usage_server_requests_total", (("endpoint", "unmatched"), ("method", "GET"),
                                                       ("status", "404")))] == 1
        assert found[("usage_server_request_duration_seconds_count", (("endpoint", "/v1/model-usage"),
                                                                       ("status", "200")))] == 60
        assert found[("usage_server_events_total", (("outcome", "accepted"),))] == 200
        assert found[("usage_server_events_total", (("outcome", "duplicate"),))] == 10
        assert found[("usage_server_events_total", (("outcome", "conflict"),))] == 10
        assert found[("usage_server_rejected_batches_total", ())] == 7
        assert key not in text
    lines = [json.loads(line) for line in (tmp_path / "gunicorn.log").read_text().splitlines() if line.startswith("{")]
    assert len({line["pid"] for line in lines if line["path"].startswith("/v1/")}) == 2  # both workers counted
