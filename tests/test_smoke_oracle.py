"""A first end-to-end check of the oracle against the API (the full matrix lives elsewhere)."""
from datetime import date

from conftest import bearer, create_config, post_events
from oracle import expected_usage


def test_oracle_matches_a_small_day_series(client, make_key, frozen_now):
    key = make_key()
    a = create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    b = create_config(client, key, "cfg_b", "unlisted-model", "Acme")
    events = [
        {"id": "e1", "timestamp": "2026-03-17T23:59:59Z", "modelConfigId": "cfg_a", "promptTokens": 1000, "completionTokens": 200},
        {"id": "e2", "timestamp": "2026-03-18T00:30:00+01:00", "modelConfigId": "cfg_a", "promptTokens": 10, "completionTokens": 5, "cost": 0.25, "billingSource": "user"},
        {"id": "e3", "timestamp": "2026-03-12T10:00:00", "modelConfigId": "cfg_b", "promptTokens": 7, "completionTokens": 3},
        {"id": "e4", "timestamp": "2026-03-11T23:00:00-01:00", "modelConfigId": "cfg_b", "promptTokens": 1, "completionTokens": 1, "cost": 0.1},
    ]
    assert post_events(client, key, events) == {"accepted": 4, "duplicates": 0, "conflicts": 0}
    configs = {c["id"]: c for c in (a, b)}
    expected = expected_usage(events, configs, {"gpt-4o": ("2.5", "10")}, date(2026, 3, 12), date(2026, 3, 18))
    body = client.get("/v1/model-usage", headers=bearer(key)).get_json()
    assert body["summary"] == expected["summary"]
    assert body["usageByModel"] == expected["usageByModel"]
    assert list(body["usageByModel"]) == list(expected["usageByModel"])
    assert body["timeSeries"] == expected["timeSeries"]
    assert body["meta"]["unpricedRequests"] == expected["unpricedRequests"] == 1
