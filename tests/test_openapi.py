"""The OpenAPI description: valid, complete (every route, every status) and true to the validation."""
import re

import pytest
from openapi_spec_validator import validate

from conftest import assert_error, bearer, create_config
from usage_server import openapi
from usage_server.schemas import CONFIG_ID, EVENT_ID
from usage_server.timeranges import GRANULARITIES, PERIODS

SECURED = {400, 401, 403, 405, 413, 500, 503}
STATUSES = {
    ("/v1/model-usage", "get"): {200, 304, 404} | SECURED,
    ("/v1/model-usage/{modelConfigId}", "get"): {200, 304, 404} | SECURED,
    ("/v1/model-usage/events", "post"): {200} | SECURED,
    ("/v1/model-configs", "post"): {201, 409} | SECURED,
    ("/v1/model-configs", "get"): {200} | SECURED,
    ("/v1/model-configs/usage", "get"): {200} | SECURED,
    ("/health", "get"): {200, 400, 405, 413, 500, 503},
    ("/openapi.json", "get"): {200, 400, 405, 413},
    ("/v1/traces", "post"): {200, 415} | SECURED,
    ("/v1/budgets", "post"): {201} | SECURED,
    ("/v1/budgets", "get"): {200} | SECURED,
    ("/v1/budgets/{budgetId}", "get"): {200, 404} | SECURED,
    ("/v1/budgets/{budgetId}", "delete"): {204, 404} | SECURED,
    ("/v1/budgets/{budgetId}/alerts", "get"): {200, 404} | SECURED,
}


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def operations(spec):
    return {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}


def test_the_description_is_valid_openapi_3(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_every_route_of_the_app_is_described_and_nothing_else(app, spec):
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in openapi.UNDOCUMENTED:
            continue
        path, _ = openapi.openapi_path(rule)
        routed |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert set(operations(spec)) == routed
    assert {rule.endpoint for rule in app.url_map.iter_rules()} - {e for e, _ in openapi.OPERATIONS} == openapi.UNDOCUMENTED


def test_each_operation_appears_once_with_its_own_summary(app, spec):
    summaries = {key: op["summary"] for key, op in operations(spec).items()}
    expected = {(openapi.openapi_path(rule)[0], method.lower()): openapi.OPERATIONS[(rule.endpoint, method.lower())]["summary"]
                for rule in app.url_map.iter_rules() if rule.endpoint not in openapi.UNDOCUMENTED
                for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert summaries == expected
    assert len(set(summaries.values())) == len(summaries)
    assert not [summary for summary in summaries.values() if "for the id" in summary or "{" in summary]


def test_the_description_says_how_time_is_read(spec):
    description = spec["info"]["description"]
    assert "timezone" in description and "time is UTC" not in description


def test_every_operation_lists_every_status_it_can_return(spec):
    found = {key: {int(status) for status in op["responses"]} for key, op in operations(spec).items()}
    assert found == STATUSES


def test_errors_share_one_schema_and_carry_their_headers(spec):
    responses = spec["components"]["responses"]
    for status, (name, _, _) in openapi.ERRORS.items():
        assert responses[name]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert responses["Unauthorized"]["headers"]["WWW-Authenticate"]["required"] is True
    assert responses["MethodNotAllowed"]["headers"]["Allow"]["required"] is True
    assert responses["ServiceUnavailable"]["headers"]["Retry-After"]["required"] is True
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "error"]
    assert set(error["properties"]) == {"error", "code", "details"}


def test_keys_are_a_bearer_scheme_and_only_the_api_needs_one(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for (path, method), op in operations(spec).items():
        expected = [] if path in ("/health", "/openapi.json") else [{"bearerAuth": []}]
        assert op["security"] == expected, (path, method)


def test_parameters_carry_the_validation_rules(spec):
    usage = {p["name"]: p for p in spec["paths"]["/v1/model-usage"]["get"]["parameters"]}
    assert usage["granularity"]["schema"]["enum"] == list(GRANULARITIES)
    assert usage["granularity"]["schema"]["default"] == "day"
    assert usage["period"]["schema"]["enum"] == list(PERIODS)
    assert "UTC" in usage["timezone"]["schema"]["enum"] and "Asia/Kathmandu" in usage["timezone"]["schema"]["enum"]
    assert usage["modelConfigId"]["schema"]["pattern"] == "^" + CONFIG_ID.pattern[2:-2] + "$"
    details = {p["name"]: p for p in spec["paths"]["/v1/model-usage/{modelConfigId}"]["get"]["parameters"]}
    assert details["modelConfigId"]["in"] == "path" and details["modelConfigId"]["required"] is True
    assert (details["limit"]["schema"]["minimum"], details["limit"]["schema"]["maximum"]) == (1, 1000)
    event = spec["components"]["schemas"]["Event"]
    assert event["properties"]["id"]["pattern"] == "^" + EVENT_ID.pattern[2:-2] + "$"
    assert sorted(event["required"]) == ["completionTokens", "id", "modelConfigId", "promptTokens", "timestamp"]
    assert event["properties"]["billingSource"]["enum"] == ["platform", "user"]
    assert event["additionalProperties"] is False
    batch = spec["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)


INSTANTS = {
    "2024-06-01T14:22:00Z": True,
    "2024-06-01T14:22:00": True,
    "2024-06-01 14:22:00.123456+05:30": True,
    "1970-01-01T00:00:00.5-01:00": True,
    "2024-06-01": False,
    "20240601T142200Z": False,
    "2024-06-01T14:22Z": False,
    "2024-06-01T14:22:00+0530": False,
    "1969-12-31T23:59:59Z": False,
    "2024-13-01T00:00:00Z": False,
    "2024-06-01T24:00:00Z": False,
}
DATES = {"2024-06-01": True, "1970-01-01": True, "1969-12-31": False, "2024-02-30": False, "2024-6-1": False}


@pytest.mark.parametrize("value, accepted", INSTANTS.items())
def test_the_timestamp_pattern_agrees_with_the_server(client, make_key, spec, value, accepted):
    """The documented pattern admits what the server takes (bar impossible days), and nothing else."""
    key = make_key()
    create_config(client, key, "cfg_a")
    pattern = spec["components"]["schemas"]["Event"]["properties"]["timestamp"]["pattern"]
    assert bool(re.search(pattern, value)) == accepted
    event = {"id": "e1", "timestamp": value, "modelConfigId": "cfg_a", "promptTokens": 1, "completionTokens": 1}
    response = client.post("/v1/model-usage/events", json={"events": [event]}, headers=bearer(key))
    if accepted:
        assert response.status_code == 200, response.get_json()
    else:
        assert_error(response, 400, "invalid_request", "events.0.timestamp")


@pytest.mark.parametrize("value, accepted", DATES.items())
def test_the_date_pattern_agrees_with_the_server(client, make_key, spec, value, accepted):
    key = make_key()
    schema = {p["name"]: p for p in spec["paths"]["/v1/model-usage"]["get"]["parameters"]}["startDate"]["schema"]
    assert schema["format"] == "date"
    query = {"startDate": value, "endDate": "2024-06-30", "granularity": "month"}
    response = client.get("/v1/model-usage", query_string=query, headers=bearer(key))
    if accepted:
        assert re.search(schema["pattern"], value)
        assert response.status_code == 200, response.get_json()
    else:
        assert_error(response, 400, "invalid_request", "startDate")


def test_answers_are_described_by_their_schemas(spec):
    ok = spec["paths"]["/v1/model-usage"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/UsageReport"}
    assert "text/csv" in ok["content"]
    assert set(ok["headers"]) == {"Cache-Control", "ETag"}
    report = spec["components"]["schemas"]["UsageReport"]
    assert sorted(report["required"]) == ["meta", "summary", "timeSeries", "usageByModel"]
    assert spec["paths"]["/v1/model-configs"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ModelConfigOut"}
    assert spec["components"]["schemas"]["IngestResult"]["required"] == ["accepted", "conflicts", "duplicates"]


def test_the_description_needs_no_key_and_is_built_once(app, client, monkeypatch):
    first = client.get("/openapi.json")
    assert first.status_code == 200
    builds = []
    monkeypatch.setattr(openapi, "build_spec", builds.append)
    assert client.get("/openapi.json").get_json() == first.get_json()
    assert builds == []
