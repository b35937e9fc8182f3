"""Both engines give the same answers for the same stored usage, and what differs (the
engine's name and settings in /health) is reported."""
from itertools import product
from types import SimpleNamespace

import pytest

from conftest import FROZEN_NOW, assert_error, bearer, create_config
from seed import generator
from usage_server import api, create_app
from usage_server.timeranges import GRANULARITIES, PERIODS

ZONES = (None, "America/Los_Angeles", "Asia/Kathmandu", "Asia/Kolkata", "Australia/Lord_Howe")  # Kolkata: kept local rollups


@pytest.fixture(scope="module")
def twins(new_database, request):
    """The same seeded events in an SQLite and a PostgreSQL database, one app on each."""
    request.getfixturevalue("postgres")
    apps, keys = {}, {}
    patch = pytest.MonkeyPatch()
    patch.setattr(generator, "time", SimpleNamespace(time=FROZEN_NOW.timestamp))
    try:
        for engine in ("sqlite", "postgresql"):
            app = create_app({"TESTING": True, "DATABASE": new_database(engine), "FAST_TIMEZONES": "Asia/Kolkata",
                              "DATA_SOURCE": "twins"})
            output = app.test_cli_runner().invoke(args=["seed", "--events", "6000", "--days", "400", "--seed", "11"])
            assert output.exit_code == 0, output.output
            apps[engine], keys[engine] = app, output.output.strip().splitlines()[-1]
    finally:
        patch.undo()
    return apps, keys


@pytest.fixture
def pinned(monkeypatch):
    monkeypatch.setattr(api, "utc_now", lambda: FROZEN_NOW)


def answers(twins, url, headers=None):
    apps, keys = twins
    return [apps[engine].test_client().get(url, headers={**bearer(keys[engine]), **(headers or {})})
            for engine in ("sqlite", "postgresql")]


def same(twins, url, headers=None):
    sqlite_answer, postgres_answer = answers(twins, url, headers)
    assert sqlite_answer.status_code == postgres_answer.status_code, url
    assert sqlite_answer.get_data() == postgres_answer.get_data(), url  # byte for byte, in the same order
    return sqlite_answer


@pytest.mark.parametrize("period, granularity", list(product(PERIODS, GRANULARITIES)))
def test_every_period_and_granularity_answers_alike(twins, pinned, period, granularity):
    for zone, config in product(ZONES, (None, "cfg_code_review")):
        url = f"/v1/model-usage?period={period}&granularity={granularity}"
        url += f"&timezone={zone}" if zone else ""
        url += f"&modelConfigId={config}" if config else ""
        if granularity == "hour" and period == "current_year":
            continue  # more than 10,000 buckets: a 400 on both, compared below
        body = same(twins, url).get_json()
        assert body["summary"]["totalRequests"] >= 0


def test_custom_ranges_csv_details_and_configs_answer_alike(twins, pinned):
    for url in ("/v1/model-usage?startDate=2025-03-01&endDate=2026-03-18&granularity=week&timezone=Asia/Kolkata",
                "/v1/model-usage?startDate=2025-10-25&endDate=2025-11-03&granularity=hour&timezone=Europe/London",
                "/v1/model-usage?period=current_year&granularity=hour",
                "/v1/model-usage?startDate=2026-03-19",
                "/v1/model-usage/cfg_support_chat?limit=1000", "/v1/model-configs/usage"):
        same(twins, url)
    configs = [answer.get_json()["data"] for answer in answers(twins, "/v1/model-configs")]
    for config in (*configs[0], *configs[1]):  # created by the seed, each at its own second
        del config["createdAt"], config["updatedAt"]
    assert configs[0] == configs[1] and len(configs[0]) == 13
    for url in ("/v1/model-usage?period=last_month&granularity=day&timezone=Asia/Kathmandu",
                "/v1/model-usage/cfg_tone_ft?limit=100"):
        assert same(twins, url, {"Accept": "text/csv"}).mimetype == "text/csv"


def test_the_etag_tracks_the_same_writes(twins, pinned):
    first, _ = answers(twins, "/v1/model-usage")
    assert first.headers["ETag"]


def test_health_names_the_engine_and_its_settings(app, client, engine):
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["engine"] == engine and body["version"]
    if engine == "postgresql":
        assert body["settings"]["TimeZone"] == "Pacific/Chatham"  # the test databases' session zone
        assert body["settings"]["default_transaction_isolation"] == "read committed"


def test_answers_name_the_engine_as_their_data_source(app, client, make_key, engine, frozen_now):
    key = make_key()
    assert client.get("/v1/model-usage", headers=bearer(key)).get_json()["meta"]["dataSource"] == f"usage-server-{engine}"


@pytest.mark.parametrize("body, path", [
    ({"id": "cfg\u0000x", "modelId": "gpt-4o", "provider": "OpenAI"}, "id"),
    ({"modelId": "gpt-4o", "provider": "OpenAI", "displayName": "a\u0000b"}, "displayName"),
    ({"modelId": "gpt-4o", "provider": "OpenAI", "settings": {"k\u0000": 1}}, "settings.k\u0000"),
    ({"modelId": "gpt-4o", "provider": "OpenAI", "settings": {"list": ["ok", "\u0000"]}}, "settings.list.1"),
])
def test_nul_characters_are_refused_on_both_engines(client, make_key, body, path):
    key = make_key()
    response = client.post("/v1/model-configs", json=body, headers=bearer(key))
    body = assert_error(response, 400, "invalid_request", path)
    assert body["details"][0]["code"] == "INVALID_CHARACTER"
    assert client.get("/v1/model-configs", headers=bearer(key)).get_json()["total"] == 0


def test_a_nul_in_an_event_is_refused_and_nothing_is_stored(client, make_key, frozen_now):
    key = make_key()
    create_config(client, key, "cfg_a")
    event = {"id": "e\u00001", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a",
             "promptTokens": 1, "completionTokens": 1}
    assert_error(client.post("/v1/model-usage/events", json={"events": [event]}, headers=bearer(key)), 400,
                 "invalid_request", "events.0.id")
    assert client.get("/v1/model-usage?period=today", headers=bearer(key)).get_json()["summary"]["totalRequests"] == 0
