"""POST/GET /v1/model-configs and GET /v1/model-configs/usage, rule by rule."""
import json
import re
from datetime import datetime, timezone

import pytest

from conftest import assert_error, bearer, create_config, post_events
from owners import app, make_key  # noqa: F401 (one database for the module)
from support import catalogue_names

NAMES = catalogue_names()
INSTANT = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")


def post_config(client, key, body):
    return client.post("/v1/model-configs", json=body, headers=bearer(key))


def configs_of(client, key):
    response = client.get("/v1/model-configs", headers=bearer(key))
    assert response.status_code == 200
    return response.get_json()


def test_create_answers_the_stored_config_with_every_field(client, make_key):
    key = make_key()
    before = datetime.now(timezone.utc).replace(microsecond=0)
    response = post_config(client, key, {"id": "cfg_chat", "displayName": "Chat", "modelId": "gpt-4o", "provider": "OpenAI"})
    after = datetime.now(timezone.utc)
    assert response.status_code == 201
    body = response.get_json()
    assert body == {
        "id": "cfg_chat",
        "displayName": "Chat",
        "modelId": "gpt-4o",
        "provider": "OpenAI",
        "modelName": NAMES["gpt-4o"],
        "isDefault": False,
        "isEnabled": True,
        "settings": {},
        "createdAt": body["createdAt"],
        "updatedAt": body["createdAt"],
    }
    assert INSTANT.match(body["createdAt"])
    assert before <= datetime.fromisoformat(body["createdAt"]) <= after
    assert configs_of(client, key) == {"data": [body], "total": 1}


def test_server_makes_unique_cfg_ids_when_none_is_given(client, make_key):
    key = make_key()
    ids = [post_config(client, key, {"modelId": "gpt-4o", "provider": "OpenAI"}).get_json()["id"] for _ in range(5)]
    assert len(set(ids)) == 5
    for config_id in ids:
        assert re.fullmatch(r"cfg_[A-Za-z0-9_.-]{8,60}", config_id)
    assert sorted(config["id"] for config in configs_of(client, key)["data"]) == sorted(ids)
    assert client.get(f"/v1/model-usage/{ids[0]}", headers=bearer(key)).status_code == 200


def test_a_repeated_id_is_a_409_and_keeps_the_first_config(client, make_key):
    key = make_key()
    first = create_config(client, key, "cfg_x", "gpt-4o", "OpenAI")
    response = post_config(client, key, {"id": "cfg_x", "displayName": "Other", "modelId": "o3", "provider": "OpenAI"})
    body = assert_error(response, 409, "conflict", path="id")
    assert body["details"] == [{"code": "DUPLICATE_ID", "message": "is already in use", "path": "id",
                                "suggestion": "choose another id or omit it"}]
    assert configs_of(client, key) == {"data": [first], "total": 1}


def test_ids_are_unique_per_owner_so_two_owners_may_share_one(client, make_key):
    alice, bob = make_key("alice"), make_key("bob")
    mine = create_config(client, alice, "cfg_shared", "gpt-4o", "OpenAI")
    theirs = create_config(client, bob, "cfg_shared", "claude-haiku-4-5", "Anthropic")
    assert configs_of(client, alice) == {"data": [mine], "total": 1}
    assert configs_of(client, bob) == {"data": [theirs], "total": 1}
    assert theirs["modelId"] == "claude-haiku-4-5"


@pytest.mark.parametrize(
    "sent, model_name, display_name",
    [
        ({"modelId": "claude-sonnet-4-5", "provider": "Anthropic"},
         NAMES["claude-sonnet-4-5"], NAMES["claude-sonnet-4-5"]),
        ({"modelId": "my-finetune-7b", "provider": "Acme"}, "my-finetune-7b", "my-finetune-7b"),
        ({"modelId": "gpt-4o", "provider": "OpenAI", "modelName": "GPT-4o (EU)"}, "GPT-4o (EU)", "GPT-4o (EU)"),
        ({"modelId": "gpt-4o", "provider": "OpenAI", "displayName": "Support bot"},
         NAMES["gpt-4o"], "Support bot"),
        ({"modelId": "gpt-4o", "provider": "OpenAI", "displayName": None, "modelName": None, "id": None},
         NAMES["gpt-4o"], NAMES["gpt-4o"]),
    ],
    ids=["catalogue-name", "unknown-model", "explicit-name", "explicit-display-name", "nulls-mean-absent"],
)
def test_model_name_comes_from_the_catalogue_else_the_model_id(client, make_key, sent, model_name, display_name):
    key = make_key()
    body = post_config(client, key, sent).get_json()
    assert (body["modelName"], body["displayName"]) == (model_name, display_name)
    assert configs_of(client, key)["data"] == [body]


def test_the_reference_clients_own_create_body_works(client, make_key):
    """The hosted API's client sends modelId, provider, providerKeyId and settings only."""
    key = make_key()
    settings = {"temperature": 0.7, "maxTokens": 1024, "stop": ["\n\n"], "json": True, "tools": None,
                "nested": {"topP": 0.95, "penalties": [0.1, -0.5, 2]}}
    before = datetime.now(timezone.utc).replace(microsecond=0)
    response = post_config(client, key, {"modelId": "claude-sonnet-4-5", "provider": "Anthropic",
                                         "providerKeyId": "pk_123", "settings": settings})
    after = datetime.now(timezone.utc)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    name = NAMES["claude-sonnet-4-5"]
    created = body["createdAt"]
    assert body == {
        "id": body["id"], "displayName": name, "modelId": "claude-sonnet-4-5", "provider": "Anthropic",
        "modelName": name, "isDefault": False, "isEnabled": True, "settings": settings,
        "createdAt": created, "updatedAt": created, "providerKeyId": "pk_123",
    }
    assert re.fullmatch(r"cfg_[A-Za-z0-9_.-]{8,60}", body["id"])
    assert INSTANT.match(created) and before <= datetime.fromisoformat(created) <= after
    assert configs_of(client, key)["data"] == [body]


def nested(depth):
    """A settings object nested `depth` levels deep, counting itself."""
    value = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_settings_may_nest_32_levels(client, make_key):
    key = make_key()
    body = post_config(client, key, {"modelId": "gpt-4o", "provider": "OpenAI", "settings": nested(32)}).get_json()
    assert body["settings"] == nested(32)


VALID = {"id": "cfg_ok", "displayName": "Ok", "modelId": "gpt-4o", "provider": "OpenAI"}


@pytest.mark.parametrize(
    "change, path, code",
    [
        ({"id": ""}, "id", "INVALID_ID"),
        ({"id": "x" * 65}, "id", "INVALID_ID"),
        ({"id": "bad id"}, "id", "INVALID_ID"),
        ({"id": "a/b"}, "id", "INVALID_ID"),
        ({"id": "caf\u00e9"}, "id", "INVALID_ID"),
        ({"id": "a:b"}, "id", "INVALID_ID"),
        ({"id": 7}, "id", "INVALID_TYPE"),
        ({"displayName": ""}, "displayName", None),
        ({"displayName": 5}, "displayName", "INVALID_TYPE"),
        ({"modelId": None}, "modelId", "REQUIRED"),
        ({"modelId": ""}, "modelId", None),
        ({"modelId": ["gpt-4o"]}, "modelId", "INVALID_TYPE"),
        ({"provider": 1}, "provider", "INVALID_TYPE"),
        ({"modelName": False}, "modelName", "INVALID_TYPE"),
        ({"providerKeyId": 3}, "providerKeyId", "INVALID_TYPE"),
        ({"settings": "temperature=1"}, "settings", "INVALID_TYPE"),
        ({"settings": [1, 2]}, "settings", "INVALID_TYPE"),
        ({"settings": nested(33)}, "settings", "TOO_DEEP"),
        ({"isDefault": True}, "isDefault", "UNKNOWN_FIELD"),
        ({"colour": "red"}, "colour", "UNKNOWN_FIELD"),
    ],
)
def test_bad_fields_are_400_naming_the_field(client, make_key, change, path, code):
    key = make_key()
    body = assert_error(post_config(client, key, {**VALID, **change}), 400, "invalid_request", path=path)
    assert [item["path"] for item in body["details"]] == [path]
    if code is not None:
        assert body["details"][0]["code"] == code
    assert configs_of(client, key) == {"data": [], "total": 0}


@pytest.mark.parametrize("missing", ["modelId", "provider"])
def test_model_id_and_provider_are_required(client, make_key, missing):
    key = make_key()
    body = {name: value for name, value in VALID.items() if name != missing}
    detail = assert_error(post_config(client, key, body), 400, "invalid_request", path=missing)["details"]
    assert detail == [{"code": "REQUIRED", "message": "is required", "path": missing}]


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'"cfg"', b"null", b'{"modelId": "gpt-4o", "provider": "OpenAI", "settings": {"t": NaN}}',
     b'{"modelId": "gpt-4o", "provider": "OpenAI", "settings": {"t": 1e400}}',
     b'{"settings": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
    ids=["empty", "truncated", "array", "string", "null", "nan", "overflowing-float", "deeply-nested"],
)
def test_bodies_that_are_not_a_config_object_are_400(client, make_key, raw):
    key = make_key()
    response = client.post("/v1/model-configs", data=raw, headers=bearer(key), content_type="application/json")
    assert_error(response, 400, "invalid_request")
    assert configs_of(client, key) == {"data": [], "total": 0}


def by_creation(configs):
    """The list's documented order: createdAt (whole seconds), then id."""
    return sorted(configs, key=lambda config: (config["createdAt"], config["id"]))


def test_list_is_data_and_total_in_creation_order_and_only_the_callers(client, make_key):
    alice, bob = make_key("alice"), make_key("bob")
    mine = [create_config(client, alice, f"cfg_{n}", "gpt-4o-mini", "OpenAI") for n in (3, 1, 2)]
    create_config(client, bob, "cfg_bob", "o3", "OpenAI")
    assert configs_of(client, alice) == {"data": by_creation(mine), "total": 3}
    assert_error(client.get("/v1/model-configs?limit=2", headers=bearer(alice)), 400, "invalid_request", path="limit")


def test_usage_is_zero_and_null_before_any_event(client, make_key):
    key = make_key()
    create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    create_config(client, key, "cfg_b", "local-model", "Ollama")
    response = client.get("/v1/model-configs/usage", headers=bearer(key))
    assert response.status_code == 200
    assert response.get_json() == {
        "data": [
            {"id": "cfg_a", "provider": "OpenAI", "modelId": "gpt-4o", "usageCount": 0, "lastUsedAt": None},
            {"id": "cfg_b", "provider": "Ollama", "modelId": "local-model", "usageCount": 0, "lastUsedAt": None},
        ],
        "total": 2,
    }


def test_usage_counts_and_last_used_at_are_exact_after_ingestion(client, make_key):
    alice, bob = make_key("alice"), make_key("bob")
    for config_id in ("cfg_a", "cfg_b", "cfg_idle"):
        create_config(client, alice, config_id, "gpt-4o", "OpenAI")
    create_config(client, bob, "cfg_a", "o3", "OpenAI")
    events = [
        {"id": "e1", "timestamp": "2026-03-18T10:00:00+05:30", "modelConfigId": "cfg_a", "promptTokens": 1, "completionTokens": 1},
        {"id": "e2", "timestamp": "2026-03-17T21:00:00-08:00", "modelConfigId": "cfg_a", "promptTokens": 1, "completionTokens": 1},
        {"id": "e3", "timestamp": "2026-03-18T05:00:00.250", "modelConfigId": "cfg_a", "promptTokens": 1, "completionTokens": 1},
        {"id": "e4", "timestamp": "2024-02-29T23:59:59+05:45", "modelConfigId": "cfg_b", "promptTokens": 1, "completionTokens": 1},
    ]
    post_events(client, alice, events)
    post_events(client, alice, events[:2])  # re-sent: counted once
    post_events(client, bob, [{**events[0], "timestamp": "2030-01-01T00:00:00Z"}])  # another owner's usage
    body = client.get("/v1/model-configs/usage", headers=bearer(alice)).get_json()
    assert body == {
        "data": [
            # e2 is 2026-03-18T05:00:00Z, e3 a quarter second later, e1 04:30Z
            {"id": "cfg_a", "provider": "OpenAI", "modelId": "gpt-4o", "usageCount": 3, "lastUsedAt": "2026-03-18T05:00:00.250Z"},
            {"id": "cfg_b", "provider": "OpenAI", "modelId": "gpt-4o", "usageCount": 1, "lastUsedAt": "2024-02-29T18:14:59Z"},
            {"id": "cfg_idle", "provider": "OpenAI", "modelId": "gpt-4o", "usageCount": 0, "lastUsedAt": None},
        ],
        "total": 3,
    }


def test_read_only_keys_cannot_create_and_write_only_keys_cannot_list(client, make_key):
    reader, writer = make_key("acme", ["read"]), make_key("acme", ["write"])
    assert_error(post_config(client, reader, VALID), 403, "forbidden")
    assert configs_of(client, reader) == {"data": [], "total": 0}
    assert post_config(client, writer, VALID).status_code == 201
    for path in ("/v1/model-configs", "/v1/model-configs/usage"):
        assert_error(client.get(path, headers=bearer(writer)), 403, "forbidden")
    assert_error(client.post("/v1/model-configs", json=VALID), 401, "unauthorized")
