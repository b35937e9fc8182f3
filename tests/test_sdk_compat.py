"""The hosted API's published Python client parses every answer and error of this server.

Both of its ways of sending the key are exercised: the typed `RuntypeApi` sends the bare
`Authorization: <key>`, `RuntypeClient(...).api` sends `Bearer <key>`.
"""
import threading

import pytest
from werkzeug.serving import make_server

from conftest import bearer, create_config, post_events

runtype = pytest.importorskip("runtype", reason="runtype-sdk is in the test extra")
from runtype._generated.client import RuntypeApi  # noqa: E402
from runtype._generated.errors import (  # noqa: E402
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from runtype._generated.core.api_error import ApiError  # noqa: E402


@pytest.fixture
def live_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def seeded(client, make_key, frozen_now):
    key = make_key("acme")
    create_config(client, key, "cfg_chat", "gpt-4o", "OpenAI")
    create_config(client, key, "cfg_cheap", "gpt-4o-mini", "OpenAI")
    events = [
        {"id": f"e{i}", "timestamp": f"2026-03-{12 + i % 7:02d}T{i % 24:02d}:15:00Z",
         "modelConfigId": "cfg_chat" if i % 3 else "cfg_cheap", "promptTokens": 100 + i,
         "completionTokens": 20 + i, "executionTime": 1.25, "billingSource": "user" if i % 4 == 0 else "platform"}
        for i in range(40)
    ]
    post_events(client, key, events)
    return key


def clients(url, key):
    """The two documented ways of building the client."""
    yield "RuntypeApi (bare key)", RuntypeApi(base_url=url, authorization=key, api_key=key)
    yield "RuntypeClient.api (Bearer)", runtype.RuntypeClient(api_key=key, base_url=url).api


def test_usage_statistics_parse_and_match_the_json(client, live_url, seeded):
    expected = client.get("/v1/model-usage?period=last_30_days&granularity=week", headers=bearer(seeded)).get_json()
    for name, sdk in clients(live_url, seeded):
        data = sdk.model_usage.get_model_usage_statistics(period="last_30_days", granularity="week")
        assert data.meta.start_date == expected["meta"]["startDate"], name
        assert data.summary.total_requests == expected["summary"]["totalRequests"] == 40, name
        assert data.summary.total_cost == expected["summary"]["totalCost"], name
        assert set(data.usage_by_model) == set(expected["usageByModel"]), name
        assert [point.date for point in data.time_series] == [p["date"] for p in expected["timeSeries"]], name
        assert sum(point.requests for point in data.time_series) == 40, name


def test_usage_details_parse(client, live_url, seeded):
    for name, sdk in clients(live_url, seeded):
        data = sdk.model_usage.get_model_usage_details("cfg_chat")
        assert data.model_config_.id == "cfg_chat", name
        assert data.model_config_.model_id == "gpt-4o", name
        assert len(data.recent_usage) == 26, name  # 40 events, every third one is cfg_cheap
        timestamps = [item.timestamp for item in data.recent_usage]
        assert timestamps == sorted(timestamps, reverse=True), name
        assert all(item.execution_time == 1.25 for item in data.recent_usage), name


def test_model_configs_create_list_and_usage(live_url, seeded, make_key):
    writer = make_key("acme", ("read", "write"))
    for index, (name, sdk) in enumerate(clients(live_url, writer)):
        created = sdk.model_configs.create_model_configuration(model_id="claude-haiku-4-5", provider="anthropic")
        assert created.id.startswith("cfg_"), name
        assert created.model_id == "claude-haiku-4-5" and created.is_enabled and not created.is_default, name
        listed = sdk.model_configs.list_model_configurations()
        assert created.id in [item.id for item in listed.data], name
        usage = sdk.model_configs.get_model_configuration_usage()
        counts = {item.model_id: item.usage_count for item in usage.data if item.model_id != "claude-haiku-4-5"}
        assert counts == {"gpt-4o": 26, "gpt-4o-mini": 14}, name
        assert usage.total == 3 + index, name


@pytest.mark.parametrize("kind", ["bad key", "read-only key", "unknown config", "malformed config"])
def test_errors_parse_as_the_clients_typed_errors(live_url, seeded, make_key, kind):
    read_only = make_key("acme", ("read",))
    cases = {
        "bad key": ("usk_nope_nope", lambda sdk: sdk.model_usage.get_model_usage_statistics(), UnauthorizedError, 401),
        "read-only key": (read_only, lambda sdk: sdk.model_configs.create_model_configuration(model_id="o3", provider="openai"), ForbiddenError, 403),
        "unknown config": (seeded, lambda sdk: sdk.model_usage.get_model_usage_details("cfg_missing"), NotFoundError, 404),
        "malformed config": (seeded, lambda sdk: sdk.model_usage.get_model_usage_details("x" * 65), BadRequestError, 400),
    }
    key, call, error_type, status = cases[kind]
    for name, sdk in clients(live_url, key):
        with pytest.raises(error_type) as caught:
            call(sdk)
        assert caught.value.status_code == status, name
        assert isinstance(caught.value.body["error"], str) and caught.value.body["code"], name


def test_a_bad_query_is_an_api_error_with_the_contract_body(live_url, seeded):
    for name, sdk in clients(live_url, seeded):
        with pytest.raises(ApiError) as caught:
            sdk.model_usage.get_model_usage_statistics(period="fortnight")
        assert caught.value.status_code == 400, name
        assert caught.value.body["code"] == "invalid_request", name
        assert caught.value.body["details"][0]["path"] == "period", name
