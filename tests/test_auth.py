"""API keys: the accepted header forms, one identical 401 for every bad key, scopes, owners."""
import hashlib
from datetime import date

import pytest

from conftest import assert_error, bearer, create_config, post_events
from oracle import expected_usage
from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

EVENT = {"id": "e1", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 10,
         "completionTokens": 5, "cost": 0.5}


def unauthorized_body(response):
    """A 401 in the contract's shape, with the Bearer challenge; returns the body."""
    body = assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].split()[0] == "Bearer"
    return body


@pytest.fixture
def key(make_key):
    return make_key("acme")


@pytest.fixture(scope="module")
def shared(engine, new_database):
    """A client and a read-write key on one database for the read-only checks: (client, key)."""
    app = create_app({"TESTING": True, "DATABASE": new_database(engine)})
    conn = connect(app.config)
    with write_transaction(conn):
        _, raw = create_key(conn, "acme", ["read", "write"])
    conn.close()
    return app.test_client(), raw


def bad_headers(key):
    key_id = key.split("_")[1]
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "blank": {"Authorization": "   "},
        "scheme only": {"Authorization": "Bearer"},
        "scheme and space": {"Authorization": "Bearer "},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "other scheme": {"Authorization": f"Token {key}"},
        "prefix only": {"Authorization": "Bearer usk_"},
        "not a key": {"Authorization": "Bearer hello"},
        "unknown": {"Authorization": f"Bearer usk_{key_id}_{'x' * 40}"},
        "unknown bare": {"Authorization": f"usk_000000000000_{'y' * 40}"},
        "truncated": {"Authorization": f"Bearer {key[:-1]}"},
        "extended": {"Authorization": f"Bearer {key}x"},
        "two keys": {"Authorization": f"Bearer {key} {key}"},
        "too long": {"Authorization": f"Bearer usk_{'a' * 300}"},
        "non-ascii": {"Authorization": "Bearer usk_é"},
    }


BAD_KINDS = list(bad_headers("usk_0_0"))


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize(
    "method, url",
    [("GET", "/v1/model-usage"), ("GET", "/v1/model-usage?period=nonsense"), ("GET", "/v1/model-usage/cfg_a"),
     ("GET", "/v1/model-configs"), ("POST", "/v1/model-usage/events"), ("POST", "/v1/model-configs")],
)
def test_every_bad_key_gets_the_same_401(shared, kind, method, url):
    """Checked before the parameters: a bad key never learns whether its request was valid."""
    client, key = shared
    canonical = unauthorized_body(client.get("/v1/model-usage"))
    response = client.open(url, method=method, headers=bad_headers(key)[kind], json={"events": [EVENT]})
    assert unauthorized_body(response) == canonical
    assert response.headers["WWW-Authenticate"] == client.get("/v1/model-usage").headers["WWW-Authenticate"]


def test_revoked_key_is_refused_at_once_with_the_same_401(app, client, runner, key):
    assert client.get("/v1/model-usage", headers=bearer(key)).status_code == 200
    canonical = unauthorized_body(client.get("/v1/model-usage"))
    result = runner.invoke(args=["revoke-key", key.split("_")[1]])
    assert result.exit_code == 0, result.output
    assert unauthorized_body(client.get("/v1/model-usage", headers=bearer(key))) == canonical
    assert unauthorized_body(client.get("/v1/model-usage", headers={"Authorization": key})) == canonical


def test_revoking_one_key_leaves_the_owners_other_keys_working(client, runner, make_key):
    first, second = make_key("acme"), make_key("acme")
    assert runner.invoke(args=["revoke-key", first]).exit_code == 0
    unauthorized_body(client.get("/v1/model-usage", headers=bearer(first)))
    assert client.get("/v1/model-usage", headers=bearer(second)).status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Bearer {key}", "bearer {key}", "BEARER {key}", "BeArEr {key}", "{key}", "Bearer   {key}", "  {key}  "],
)
def test_bearer_and_bare_forms_are_accepted(shared, header):
    client, key = shared
    response = client.get("/v1/model-usage", headers={"Authorization": header.format(key=key)})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["meta"]["period"] == "last_7_days"


@pytest.mark.parametrize(
    "scopes, method, url, body",
    [
        (("read",), "POST", "/v1/model-usage/events", {"events": [EVENT]}),
        (("read",), "POST", "/v1/model-usage/events", {"not": "valid"}),  # scope is checked before the body
        (("read",), "POST", "/v1/model-configs", {"modelId": "gpt-4o", "provider": "OpenAI"}),
        (("write",), "GET", "/v1/model-usage", None),
        (("write",), "GET", "/v1/model-usage?period=nonsense", None),
        (("write",), "GET", "/v1/model-usage/cfg_a", None),
        (("write",), "GET", "/v1/model-configs", None),
        (("write",), "GET", "/v1/model-configs/usage", None),
    ],
)
def test_valid_key_without_the_scope_is_a_403(client, make_key, scopes, method, url, body):
    key = make_key("acme", scopes)
    response = client.open(url, method=method, headers=bearer(key), json=body)
    body = assert_error(response, 403, "forbidden")
    assert body["error"] == f'this key lacks the "{"write" if method == "POST" else "read"}" scope'
    assert "details" not in body
    assert response.headers.get("WWW-Authenticate", "Bearer").startswith("Bearer")


def test_each_scope_opens_its_own_endpoints(client, make_key, frozen_now):
    reader, writer = make_key("acme", ("read",)), make_key("acme", ("write",))
    create_config(client, writer, "cfg_a")
    assert post_events(client, writer, [EVENT])["accepted"] == 1
    body = client.get("/v1/model-usage?period=today", headers=bearer(reader)).get_json()
    assert body["summary"]["totalRequests"] == 1


def test_keys_are_stored_only_as_sha256_hashes(app, key):
    conn = connect(app.config)
    rows = conn.execute("SELECT * FROM api_key").fetchall()
    conn.close()
    assert len(rows) == 1
    assert not any(key in str(value) for value in rows[0])
    assert hashlib.sha256(key.encode()).hexdigest() in rows[0]


# --- owner isolation ---------------------------------------------------------------------------


def owner_events(prefix, cost):
    """The same event ids for both owners, on the same config ids, with different payloads."""
    return [
        {"id": "e1", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 100,
         "completionTokens": 10, "cost": cost},
        {"id": "e2", "timestamp": "2026-03-15T23:59:59Z", "modelConfigId": "cfg_b", "promptTokens": 200,
         "completionTokens": 20, "billingSource": "user"},
        {"id": f"{prefix}-only", "timestamp": "2026-03-12T00:00:00Z", "modelConfigId": "cfg_a", "promptTokens": 1,
         "completionTokens": 1, "cost": cost * 3},
    ]


def test_owners_with_overlapping_config_ids_see_only_their_own_usage(client, make_key, frozen_now):
    keys, configs, events = {}, {}, {}
    models = {"acme": ("gpt-4o", "claude-haiku-4-5"), "globex": ("gpt-4o-mini", "gemini-2.5-pro")}
    for number, owner in enumerate(models, start=1):
        keys[owner] = make_key(owner)
        configs[owner] = {
            config_id: create_config(client, keys[owner], config_id, model_id, "Vendor")
            for config_id, model_id in zip(("cfg_a", "cfg_b"), models[owner])
        }
        events[owner] = owner_events(owner, 0.25 * number)
        assert post_events(client, keys[owner], events[owner]) == {"accepted": 3, "duplicates": 0, "conflicts": 0}
    prices = {"gpt-4o": ("2.5", "10"), "claude-haiku-4-5": ("1", "5"), "gpt-4o-mini": ("0.15", "0.6"),
              "gemini-2.5-pro": ("1.25", "10")}
    for owner, key in keys.items():
        for config_id in (None, "cfg_a", "cfg_b"):
            query = {"granularity": "day"} | ({"modelConfigId": config_id} if config_id else {})
            body = client.get("/v1/model-usage", query_string=query, headers=bearer(key)).get_json()
            expected = expected_usage(events[owner], configs[owner], prices, date(2026, 3, 12), date(2026, 3, 18),
                                      "day", "UTC", config_id)
            assert body["summary"] == expected["summary"]
            assert body["usageByModel"] == expected["usageByModel"]
            assert body["timeSeries"] == expected["timeSeries"]
        listed = client.get("/v1/model-configs", headers=bearer(key)).get_json()
        assert [(c["id"], c["modelId"]) for c in listed["data"]] == [("cfg_a", models[owner][0]), ("cfg_b", models[owner][1])]
        details = client.get("/v1/model-usage/cfg_a", headers=bearer(key)).get_json()
        assert {item["id"] for item in details["recentUsage"]} == {"e1", f"{owner}-only"}
    create_config(client, keys["acme"], "cfg_private")
    for url in ("/v1/model-usage/cfg_private", "/v1/model-usage?modelConfigId=cfg_private"):
        assert client.get(url, headers=bearer(keys["acme"])).status_code == 200
        assert_error(client.get(url, headers=bearer(keys["globex"])), 404, "not_found")
