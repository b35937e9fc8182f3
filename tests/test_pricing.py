"""The model catalogue: shipped prices, `usage-server import-prices FILE`, unpriced models."""
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from conftest import bearer, create_config, post_events
from usage_server import api

SHIPPED = json.loads(Path(api.__file__).with_name("prices.json").read_text(), parse_float=Decimal)["models"]


def catalogue_micros(prompt_tokens, completion_tokens, prompt_price, completion_price) -> int:
    """USD per million tokens times tokens is micro-dollars; rounded half up."""
    exact = prompt_tokens * Decimal(prompt_price) + completion_tokens * Decimal(completion_price)
    return int(exact.quantize(Decimal(1), ROUND_HALF_UP))


def usd(micros: int) -> float:
    return float(Decimal(micros) / 10**6)


def record(client, key, config_id, event_id, prompt_tokens=123_457, completion_tokens=65_433):
    post_events(client, key, [{"id": event_id, "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": config_id,
                               "promptTokens": prompt_tokens, "completionTokens": completion_tokens}])
    recent = client.get(f"/v1/model-usage/{config_id}?limit=1000", headers=bearer(key)).get_json()["recentUsage"]
    return next(item for item in recent if item["id"] == event_id)


def write_catalogue(tmp_path, models, name="prices.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"models": models}))
    return str(path)


def import_prices(runner, path):
    result = runner.invoke(args=["import-prices", path])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_shipped_catalogue_names_and_prices_every_model_after_init(runner, client, make_key):
    assert runner.invoke(args=["init-db"]).exit_code == 0
    key = make_key()
    assert len(SHIPPED) >= 10
    for n, model in enumerate(SHIPPED):
        config = create_config(client, key, f"cfg_{n}", model["modelId"], model["provider"])
        assert config["modelName"] == model["displayName"]
        item = record(client, key, f"cfg_{n}", f"e{n}")
        micros = catalogue_micros(123_457, 65_433, model["promptPerMillion"], model["completionPerMillion"])
        assert (item["estimatedCost"], item["priced"]) == (usd(micros), True)


def test_init_db_drop_brings_the_shipped_catalogue_back(runner, client, make_key, tmp_path):
    import_prices(runner, write_catalogue(tmp_path, [
        {"modelId": "gpt-4o", "provider": "OpenAI", "displayName": "Renamed", "promptPerMillion": 99, "completionPerMillion": 99}]))
    assert runner.invoke(args=["init-db"]).exit_code == 0  # without --drop: the import stays
    key = make_key()
    assert create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")["modelName"] == "Renamed"
    assert runner.invoke(args=["init-db", "--drop"]).exit_code == 0
    key = make_key()
    shipped = next(model for model in SHIPPED if model["modelId"] == "gpt-4o")
    assert create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")["modelName"] == shipped["displayName"]
    assert record(client, key, "cfg_a", "e1")["estimatedCost"] == \
        usd(catalogue_micros(123_457, 65_433, shipped["promptPerMillion"], shipped["completionPerMillion"]))


def test_imported_prices_apply_to_later_events_and_never_rewrite_earlier_ones(runner, client, make_key, tmp_path):
    key = make_key()
    create_config(client, key, "cfg_a", "gpt-4o-mini", "OpenAI")
    before = record(client, key, "cfg_a", "before")
    output = import_prices(runner, write_catalogue(tmp_path, [
        {"modelId": "gpt-4o-mini", "provider": "OpenAI", "displayName": "GPT-4o mini", "promptPerMillion": 0.075,
         "completionPerMillion": 0.3},
        {"modelId": "acme-1", "provider": "Acme", "promptPerMillion": "1.234567", "completionPerMillion": 0},
    ]))
    assert output == "Imported 2 model prices.\n"
    after = record(client, key, "cfg_a", "after")
    assert after["estimatedCost"] == usd(catalogue_micros(123_457, 65_433, "0.075", "0.3"))
    assert client.get("/v1/model-usage/cfg_a", headers=bearer(key)).get_json()["recentUsage"][1] == before
    acme = create_config(client, key, "cfg_acme", "acme-1", "Acme")
    assert acme["modelName"] == "acme-1"  # no displayName in the file: the model id
    assert record(client, key, "cfg_acme", "acme")["estimatedCost"] == usd(catalogue_micros(123_457, 65_433, "1.234567", "0"))


@pytest.mark.parametrize("prices", [{}, {"promptPerMillion": 1}, {"completionPerMillion": 1}],
                         ids=["no-prices", "prompt-only", "completion-only"])
def test_a_model_without_both_prices_is_unpriced(runner, client, make_key, tmp_path, frozen_now, prices):
    key = make_key()
    create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    import_prices(runner, write_catalogue(tmp_path, [{"modelId": "gpt-4o", "provider": "OpenAI", **prices}]))
    item = record(client, key, "cfg_a", "e1")
    assert (item["estimatedCost"], item["priced"]) == (0.0, False)
    body = client.get("/v1/model-usage", headers=bearer(key)).get_json()
    assert (body["meta"]["unpricedRequests"], body["summary"]["totalRequests"], body["summary"]["totalCost"]) == (1, 1, 0.0)


BAD_FILES = {
    "not-json": "prices: none",
    "not-an-object": "[1, 2]",
    "no-models": '{"note": "empty"}',
    "models-not-a-list": '{"models": {"gpt-4o": 1}}',
    "no-provider": '{"models": [{"modelId": "x", "promptPerMillion": 1, "completionPerMillion": 1}]}',
    "negative-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": -1, "completionPerMillion": 1}]}',
    "nan-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": NaN, "completionPerMillion": 1}]}',
    "infinite-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": Infinity, "completionPerMillion": 1}]}',
    "boolean-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": true, "completionPerMillion": 1}]}',
    "text-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": "cheap", "completionPerMillion": 1}]}',
    "huge-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": 1e30, "completionPerMillion": 1}]}',
    "finer-than-a-micro-dollar": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": 0.0000001, "completionPerMillion": 1}]}',
    "second-model-bad": '{"models": [{"modelId": "gpt-4o", "provider": "OpenAI", "promptPerMillion": 50, "completionPerMillion": 50},'
                        ' {"modelId": "", "provider": "X"}]}',
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_is_a_clear_error_and_changes_nothing(runner, client, make_key, tmp_path, name):
    key = make_key()
    create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    expected = record(client, key, "cfg_a", "e1")["estimatedCost"]
    path = tmp_path / "prices.json"
    path.write_text(BAD_FILES[name])
    result = runner.invoke(args=["import-prices", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and str(path) in result.output
    assert "Traceback" not in result.output
    assert record(client, key, "cfg_a", "e2")["estimatedCost"] == expected


def test_a_missing_file_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(args=["import-prices", str(tmp_path / "nowhere.json")])
    assert result.exit_code == 2 and "does not exist" in result.output
