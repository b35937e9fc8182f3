"""Prices of events sent without a cost: the genai-prices catalogue at the event's time (tiers,
cache reads and writes, dated ids), the operator's overrides (`usage-server import-prices`),
the pricing order, priceSource, rounding once per event, and no network at run time.

Expected costs are worked out by hand below from the catalogue's rates per million tokens
(genai-prices 0.2.3), written next to each case: USD per million tokens times tokens is
micro-dollars."""
import json
import random
import socket
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

import pytest
from genai_prices import Usage, data_snapshot
from genai_prices.data import providers

from conftest import bearer, create_config, post_events
from usage_server import pricing, queries
from usage_server.ingest import NewEvent, store_events
from usage_server.pricing import PriceList, Rates, catalogue_model, rates_per_million
from usage_server.storage import connect, write_transaction


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000


def catalogue_cost(provider, model_id, when, prompt, completion, cached=0, written=0, reasoning=0) -> int:
    return catalogue_model(provider, model_id).prices_at(us(when)).cost(prompt, completion, cached, written, reasoning)


# --- the catalogue, priced by the pure function --------------------------------------------------

CASES = {
    # OpenAI gpt-4o: $2.50 in, $10 out: 123457 * 2.5 + 65433 * 10 = 962972.5 -> 962973 (half up)
    "openai-gpt-4o": (("OpenAI", "gpt-4o", 123_457, 65_433, 0, 0), 962_973),
    # a dated id: gpt-4o-mini $0.15 in, $0.075 cached, $0.60 out: 6000 * 0.15 + 4000 * 0.075 + 500 * 0.6 = 1500
    "openai-dated-cached": (("openai", "gpt-4o-mini-2024-07-18", 10_000, 500, 4_000, 0), 1_500),
    # Anthropic claude-haiku-4-5: $1 in, $0.10 cache read, $1.25 cache write, $5 out:
    # 2000 * 1 + 15000 * 0.1 + 3000 * 1.25 + 1000 * 5 = 2000 + 1500 + 3750 + 5000 = 12250
    "anthropic-haiku-cached": (("Anthropic", "claude-haiku-4-5", 20_000, 1_000, 15_000, 3_000), 12_250),
    # claude-opus-4-1: $15 in, $75 out: 1001 * 15 + 333 * 75 = 15015 + 24975 = 39990
    "anthropic-opus": (("anthropic", "claude-opus-4-1", 1_001, 333, 0, 0), 39_990),
    # Google gemini-2.5-flash: $0.30 in, $2.50 out: 7 * 0.3 + 3 * 2.5 = 9.6 -> 10
    "google-flash": (("Google", "gemini-2.5-flash", 7, 3, 0, 0), 10),
    # "Gemini" names Google too; gemini-2.5-pro below its 200k tier: $1.25 in, $10 out:
    # 100000 * 1.25 + 2000 * 10 = 145000
    "gemini-pro": (("Gemini", "gemini-2.5-pro", 100_000, 2_000, 0, 0), 145_000),
    # Mistral mistral-large-latest: $2 in, $6 out: 1234 * 2 + 567 * 6 = 2468 + 3402 = 5870
    "mistral-large": (("Mistral", "mistral-large-latest", 1_234, 567, 0, 0), 5_870),
    # an unknown provider falls back to the model id alone
    "model-id-alone": (("Some Gateway", "claude-opus-4-1", 1_001, 333, 0, 0), 39_990),
    # a date the catalogue does not list: the undated model, gpt-4.1-mini $0.40 in, $1.60 out:
    # 1000 * 0.4 + 1000 * 1.6 = 2000
    "dated-fallback": (("OpenAI", "gpt-4.1-mini-2031-01-01", 1_000, 1_000, 0, 0), 2_000),
}


@pytest.mark.parametrize("case", CASES)
def test_the_catalogue_prices_models_of_four_providers_with_and_without_cache(case):
    (provider, model_id, prompt, completion, cached, written), micros = CASES[case]
    assert catalogue_cost(provider, model_id, "2026-03-18T10:00:00+00:00", prompt, completion, cached, written) == micros


def test_claude_sonnet_4_5_costs_more_for_every_token_above_200k_input_tokens():
    # <= 200k input tokens: $3 in, $0.30 cache read, $3.75 cache write, $15 out:
    # 80000 * 3 + 100000 * 0.3 + 20000 * 3.75 + 4000 * 15 = 240000 + 30000 + 75000 + 60000 = 405000
    assert catalogue_cost("anthropic", "claude-sonnet-4-5", "2026-03-18T00:00:00+00:00",
                          200_000, 4_000, 100_000, 20_000) == 405_000
    # > 200k: $6 in, $0.60 cache read, $7.50 cache write, $22.50 out, on all of them:
    # 130000 * 6 + 100000 * 0.6 + 20000 * 7.5 + 4000 * 22.5 = 780000 + 60000 + 150000 + 90000 = 1080000
    assert catalogue_cost("anthropic", "claude-sonnet-4-5", "2026-03-18T00:00:00+00:00",
                          250_000, 4_000, 100_000, 20_000) == 1_080_000
    # 200001 uncached: 200001 * 6 = 1200006
    assert catalogue_cost("anthropic", "claude-sonnet-4-5", "2026-03-18T00:00:00+00:00", 200_001, 0) == 1_200_006


@pytest.mark.parametrize("when, micros", [
    # o3 until 2025-06-09: $10 in, $40 out: 1000 * 10 + 1000 * 40 = 50000
    ("2025-06-09T23:59:59+00:00", 50_000),
    # from 2025-06-10 (UTC): $2 in, $8 out: 1000 * 2 + 1000 * 8 = 10000
    ("2025-06-10T00:00:00+00:00", 10_000),
])
def test_a_price_change_applies_from_its_date(when, micros):
    assert catalogue_cost("OpenAI", "o3", when, 1_000, 1_000) == micros


def test_a_price_change_applies_by_the_events_own_day_in_one_batch():
    # mistral-small-latest: $0.10 in, $0.30 out; from 2026-03-16 $0.15 in, $0.60 out
    model = catalogue_model("mistral", "mistral-small-latest")
    assert model.prices_at(us("2026-03-15T23:00:00+00:00")).cost(10_000, 10_000) == 1_000 + 3_000
    assert model.prices_at(us("2026-03-16T01:00:00+00:00")).cost(10_000, 10_000) == 1_500 + 6_000
    assert model.prices_at(us("2026-03-15T23:30:00+00:00")).cost(10_000, 10_000) == 4_000  # cached per day, not per call


def test_unknown_models_are_not_in_the_catalogue():
    assert catalogue_model("Acme", "acme-lab-2") is None
    assert catalogue_model("OpenAI", "ft:gpt-4o-mini:acme:tone") is None  # a fine-tune: the operator prices it


def test_the_exact_cost_is_what_the_catalogue_package_computes_rounded_once():
    """Every catalogue model, random usage and dates: the integer arithmetic equals the
    package's own calc_price (Decimal USD), rounded half up to micro-dollars."""
    rng = random.Random(7)
    compared = 0
    for provider in providers:
        for model in provider.models:
            ours = pricing.CatalogueModel(model)
            for _ in range(2):
                ts = rng.randrange(1_700_000_000, 1_800_000_000) * 1_000_000
                prompt = rng.choice([0, 17, 4_321, 128_001, 200_000, 200_001, 272_001, 600_000])
                cached = rng.randrange(prompt + 1) if rng.random() < 0.5 else 0
                written = rng.randrange(prompt - cached + 1) if rng.random() < 0.5 else 0
                completion = rng.randrange(60_000)
                prices = ours.prices_at(ts)
                if prices is None:
                    continue
                theirs = model.calc_price(
                    Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached,
                          cache_write_tokens=written),
                    provider, genai_request_timestamp=datetime.fromtimestamp(ts // 10**6, timezone.utc))
                expected = int((theirs.total_price * 10**6).quantize(Decimal(1), ROUND_HALF_UP))
                assert prices.cost(prompt, completion, cached, written) == expected, (provider.id, model.id)
                compared += 1
    assert compared > 3_000


# --- rounding -------------------------------------------------------------------------------------


def test_half_a_micro_dollar_rounds_up():
    rates = rates_per_million(Decimal("0.5"), Decimal("1.5"))  # one token: 0.5 and 1.5 micro-dollars
    assert [rates.cost(1, 0), rates.cost(0, 1), rates.cost(3, 0), rates.cost(1, 1)] == [1, 2, 2, 2]
    assert rates.cost(0, 0) == 0


def test_a_million_tiny_events_total_the_sum_of_their_rounded_costs():
    """Each event is rounded once; a total is the sum of those integers, never a rounding of
    the exact sum (which here differs by thousands of micro-dollars)."""
    prices = catalogue_model("OpenAI", "gpt-4o-mini").prices_at(us("2026-03-18T00:00:00+00:00"))
    # gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out; shapes are (prompt, completion, cached)
    by_hand = {
        (1, 0, 0): Decimal("0.15"),  # -> 0
        (3, 1, 0): 3 * Decimal("0.15") + Decimal("0.6"),  # 1.05 -> 1
        (2, 0, 2): 2 * Decimal("0.075"),  # 0.15 -> 0
        (4, 0, 1): 3 * Decimal("0.15") + Decimal("0.075"),  # 0.525 -> 1
        (10, 0, 0): 10 * Decimal("0.15"),  # 1.5 -> 2: half up
        (10, 3, 0): 10 * Decimal("0.15") + 3 * Decimal("0.6"),  # 3.3 -> 3
    }
    rng = random.Random(11)
    shapes = list(by_hand)
    counts = dict.fromkeys(shapes, 0)
    total = 0
    for _ in range(1_000_000):
        prompt, completion, cached = shape = shapes[rng.randrange(len(shapes))]
        counts[shape] += 1
        total += prices.cost(prompt, completion, cached)
    rounded = {shape: int(exact.quantize(Decimal(1), ROUND_HALF_UP)) for shape, exact in by_hand.items()}
    assert rounded == {(1, 0, 0): 0, (3, 1, 0): 1, (2, 0, 2): 0, (4, 0, 1): 1, (10, 0, 0): 2, (10, 3, 0): 3}
    assert total == sum(counts[shape] * rounded[shape] for shape in shapes)
    exact_total = sum(counts[shape] * by_hand[shape] for shape in shapes)
    assert abs(exact_total - total) > 10_000


# --- no network ---------------------------------------------------------------------------------


def test_pricing_never_touches_the_network_nor_a_process_wide_snapshot(monkeypatch, client, make_key):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # what a library's auto-update would install: ignored, the shipped data is used
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", data_snapshot.DataSnapshot([], from_auto_update=True))
    pricing.catalogue_model.cache_clear()
    try:
        assert catalogue_cost("OpenAI", "gpt-4o", "2026-03-18T00:00:00+00:00", 123_457, 65_433) == 962_973
        key = make_key()
        create_config(client, key, "cfg_a", "claude-opus-4-1", "Anthropic")
        post_events(client, key, [{"id": "e1", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a",
                                   "promptTokens": 1_001, "completionTokens": 333}])
        item = client.get("/v1/model-usage/cfg_a", headers=bearer(key)).get_json()["recentUsage"][0]
        assert (item["estimatedCost"], item["priceSource"]) == (0.03999, "catalogue")
    finally:
        pricing.catalogue_model.cache_clear()


# --- through ingestion: priceSource, the order, overrides ----------------------------------------


def store(app, owner, events):
    """Store NewEvents as the HTTP API would (token details set directly)."""
    conn = connect(app.config)
    try:
        with write_transaction(conn):
            owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": owner}).fetchone()[0]
            configs = {event.config_id: conn.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": event.config_id})
                       .fetchone() for event in events}
            return store_events(conn, owner_id, events, configs)
    finally:
        conn.close()


def event(event_id, config_id, prompt, completion, cached=0, written=0, cost=None, when="2026-03-18T10:00:00+00:00"):
    return NewEvent(event_id=event_id, ts_us=us(when), config_id=config_id, prompt_tokens=prompt,
                    completion_tokens=completion, total_tokens=prompt + completion, cost_micros=cost,
                    execution_us=None, billing_source="platform", cached_prompt_tokens=cached, cache_write_tokens=written)


def recent(client, key, config_id) -> dict:
    items = client.get(f"/v1/model-usage/{config_id}?limit=1000", headers=bearer(key)).get_json()["recentUsage"]
    return {item["id"]: (item["estimatedCost"], item["priced"], item["priceSource"]) for item in items}


def write_overrides(tmp_path, models, name="prices.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"models": models}))
    return str(path)


def import_prices(runner, path):
    result = runner.invoke(args=["import-prices", path])
    assert result.exit_code == 0, result.output
    return result.output


def test_cached_requests_are_priced_as_the_providers_bill_them(app, client, make_key):
    key = make_key()
    create_config(client, key, "cfg_claude", "claude-sonnet-4-5", "Anthropic")
    create_config(client, key, "cfg_gpt", "gpt-4.1", "OpenAI")
    store(app, "acme", [
        # Anthropic usage: input_tokens 1200, cache_read_input_tokens 50000, cache_creation_input_tokens
        # 8000, output_tokens 700; promptTokens counts all three: 59200. Sonnet 4.5 (<= 200k):
        # 1200 * 3 + 50000 * 0.30 + 8000 * 3.75 + 700 * 15 = 3600 + 15000 + 30000 + 10500 = 59100
        event("anthropic", "cfg_claude", 59_200, 700, cached=50_000, written=8_000),
        # OpenAI usage: prompt_tokens 3000 with prompt_tokens_details.cached_tokens 2048, completion 250.
        # gpt-4.1: $2 in, $0.50 cached, $8 out: 952 * 2 + 2048 * 0.5 + 250 * 8 = 1904 + 1024 + 2000 = 4928
        event("openai", "cfg_gpt", 3_000, 250, cached=2_048),
    ])
    assert recent(client, key, "cfg_claude") == {"anthropic": (0.0591, True, "catalogue")}
    assert recent(client, key, "cfg_gpt") == {"openai": (0.004928, True, "catalogue")}


def test_the_pricing_order_is_sent_then_override_then_catalogue_then_none(app, client, runner, make_key, tmp_path):
    key = make_key()
    create_config(client, key, "cfg_gpt", "gpt-4o", "OpenAI")
    create_config(client, key, "cfg_mini", "gpt-4o-mini", "OpenAI")
    create_config(client, key, "cfg_lab", "acme-lab-2", "Acme")
    import_prices(runner, write_overrides(tmp_path, [
        {"modelId": "gpt-4o", "provider": "OpenAI", "promptPerMillion": 1, "completionPerMillion": 2,
         "cacheReadPerMillion": "0.25", "cacheWritePerMillion": "1.5"}]))
    store(app, "acme", [
        event("sent", "cfg_gpt", 1_000, 1_000, cost=123),  # sent: kept as sent, whatever the prices
        # override: (1000 - 400 - 100) * 1 + 400 * 0.25 + 100 * 1.5 + 1000 * 2 = 500 + 100 + 150 + 2000 = 2750
        event("override", "cfg_gpt", 1_000, 1_000, cached=400, written=100),
        # catalogue: gpt-4o-mini 1000 * 0.15 + 1000 * 0.6 = 750
        event("catalogue", "cfg_mini", 1_000, 1_000),
        event("none", "cfg_lab", 1_000, 1_000),
    ])
    assert recent(client, key, "cfg_gpt") == {"sent": (0.000123, True, "sent"), "override": (0.00275, True, "override")}
    assert recent(client, key, "cfg_mini") == {"catalogue": (0.00075, True, "catalogue")}
    assert recent(client, key, "cfg_lab") == {"none": (0.0, False, "none")}
    body = client.get("/v1/model-usage?startDate=2026-03-18&endDate=2026-03-18", headers=bearer(key)).get_json()
    assert body["meta"]["unpricedRequests"] == 1
    assert body["usageByModel"]["acme-lab-2"]["unpricedRequests"] == 1
    assert body["summary"]["totalCost"] == 0.003623  # 123 + 2750 + 750 micro-dollars


def test_an_override_without_cache_rates_prices_cached_tokens_at_its_prompt_rate(app, client, runner, make_key, tmp_path):
    key = make_key()
    create_config(client, key, "cfg_ft", "ft:gpt-4o-mini:acme:tone", "OpenAI")
    store(app, "acme", [event("before", "cfg_ft", 1_000, 100, cached=600)])
    import_prices(runner, write_overrides(tmp_path, [
        {"modelId": "ft:gpt-4o-mini:acme:tone", "provider": "OpenAI", "promptPerMillion": "0.3",
         "completionPerMillion": "1.2"}]))
    store(app, "acme", [event("after", "cfg_ft", 1_000, 100, cached=600)])
    # 1000 * 0.3 + 100 * 1.2 = 300 + 120 = 420; the event stored before keeps its price until a reprice
    assert recent(client, key, "cfg_ft") == {"before": (0.0, False, "none"), "after": (0.00042, True, "override")}


def test_model_names_come_from_the_override_else_the_catalogue_else_the_id(client, runner, make_key, tmp_path):
    key = make_key()
    import_prices(runner, write_overrides(tmp_path, [
        {"modelId": "gpt-4o", "provider": "OpenAI", "displayName": "GPT-4o (negotiated)", "promptPerMillion": 2,
         "completionPerMillion": 8},
        {"modelId": "claude-haiku-4-5", "provider": "Anthropic", "promptPerMillion": "0.9", "completionPerMillion": 4},
        {"modelId": "acme-1", "provider": "Acme", "promptPerMillion": 1, "completionPerMillion": 1},
    ]))
    names = {model_id: create_config(client, key, f"cfg_{n}", model_id, provider)["modelName"]
             for n, (model_id, provider) in enumerate([("gpt-4o", "OpenAI"), ("claude-haiku-4-5", "Anthropic"),
                                                       ("acme-1", "Acme"), ("claude-opus-4-1", "Anthropic"),
                                                       ("acme-2", "Acme")])}
    assert names == {"gpt-4o": "GPT-4o (negotiated)", "claude-haiku-4-5": "Claude Haiku 4.5", "acme-1": "acme-1",
                     "claude-opus-4-1": "Claude Opus 4.1", "acme-2": "acme-2"}


@pytest.mark.parametrize("prices", [{}, {"promptPerMillion": 1}, {"completionPerMillion": 1}],
                         ids=["no-prices", "prompt-only", "completion-only"])
def test_an_override_without_both_prices_only_names_the_model(runner, client, make_key, tmp_path, frozen_now, prices):
    key = make_key()
    create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    create_config(client, key, "cfg_b", "acme-x", "Acme")
    import_prices(runner, write_overrides(tmp_path, [{"modelId": "gpt-4o", "provider": "OpenAI", **prices},
                                                     {"modelId": "acme-x", "provider": "Acme", **prices}]))
    post_events(client, key, [{"id": f"e-{config}", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": config,
                               "promptTokens": 1_000, "completionTokens": 1_000} for config in ("cfg_a", "cfg_b")])
    # gpt-4o from the catalogue: 1000 * 2.5 + 1000 * 10 = 12500
    assert recent(client, key, "cfg_a") == {"e-cfg_a": (0.0125, True, "catalogue")}
    assert recent(client, key, "cfg_b") == {"e-cfg_b": (0.0, False, "none")}
    body = client.get("/v1/model-usage", headers=bearer(key)).get_json()
    assert (body["meta"]["unpricedRequests"], body["summary"]["totalRequests"]) == (1, 2)


def test_todays_override_file_format_still_imports(runner, client, make_key, tmp_path):
    key = make_key()
    output = import_prices(runner, write_overrides(tmp_path, [
        {"modelId": "gpt-4o-mini", "provider": "OpenAI", "displayName": "GPT-4o mini", "promptPerMillion": 0.075,
         "completionPerMillion": 0.3},
        {"modelId": "acme-1", "provider": "Acme", "promptPerMillion": "1.234567", "completionPerMillion": 0},
    ]))
    assert output == "Imported 2 model prices.\n"
    create_config(client, key, "cfg_acme", "acme-1", "Acme")
    post_events(client, key, [{"id": "acme", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_acme",
                               "promptTokens": 123_457, "completionTokens": 65_433}])
    # 123457 * 1.234567 = 152415.5... -> 152416
    assert recent(client, key, "cfg_acme") == {"acme": (0.152416, True, "override")}


def test_pricing_looks_a_model_up_once_per_batch(app, client, make_key, monkeypatch):
    key = make_key()
    create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    looked_up = []
    real = pricing.model_pricing
    monkeypatch.setattr("usage_server.ingest.model_pricing", lambda *args: looked_up.append(args[1:]) or real(*args))
    store(app, "acme", [event(f"e{n}", "cfg_a", n, n) for n in range(500)])
    assert looked_up == [("gpt-4o", "OpenAI")]


def test_a_price_list_picks_its_tier_by_the_prompt_tokens():
    flat, long = Rates(0, 1, 2), Rates(0, 10, 20)
    prices = PriceList(((pricing.FLAT, flat), (5, long)))
    assert [prices.cost(prompt, 1) for prompt in (0, 5, 6)] == [2, 7, 80]


BAD_FILES = {
    "not-json": "prices: none",
    "not-an-object": "[1, 2]",
    "no-models": '{"note": "empty"}',
    "models-not-a-list": '{"models": {"gpt-4o": 1}}',
    "no-provider": '{"models": [{"modelId": "x", "promptPerMillion": 1, "completionPerMillion": 1}]}',
    "negative-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": -1, "completionPerMillion": 1}]}',
    "negative-cache-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": 1, "completionPerMillion": 1,'
                            ' "cacheReadPerMillion": -1}]}',
    "nan-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": NaN, "completionPerMillion": 1}]}',
    "infinite-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": Infinity, "completionPerMillion": 1}]}',
    "boolean-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": true, "completionPerMillion": 1}]}',
    "text-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": "cheap", "completionPerMillion": 1}]}',
    "huge-price": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": 1e30, "completionPerMillion": 1}]}',
    "finer-than-a-micro-dollar": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": 0.0000001, "completionPerMillion": 1}]}',
    "finer-cache-write": '{"models": [{"modelId": "x", "provider": "X", "promptPerMillion": 1, "completionPerMillion": 1,'
                         ' "cacheWritePerMillion": 0.0000001}]}',
    "second-model-bad": '{"models": [{"modelId": "gpt-4o", "provider": "OpenAI", "promptPerMillion": 50, "completionPerMillion": 50},'
                        ' {"modelId": "", "provider": "X"}]}',
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_is_a_clear_error_and_changes_nothing(runner, client, make_key, tmp_path, name):
    key = make_key()
    create_config(client, key, "cfg_a", "gpt-4o", "OpenAI")
    post_events(client, key, [{"id": "e1", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a",
                               "promptTokens": 1_000, "completionTokens": 1_000}])
    path = tmp_path / "prices.json"
    path.write_text(BAD_FILES[name])
    result = runner.invoke(args=["import-prices", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and str(path) in result.output
    assert "Traceback" not in result.output
    post_events(client, key, [{"id": "e2", "timestamp": "2026-03-18T10:00:00Z", "modelConfigId": "cfg_a",
                               "promptTokens": 1_000, "completionTokens": 1_000}])
    assert recent(client, key, "cfg_a") == {"e1": (0.0125, True, "catalogue"), "e2": (0.0125, True, "catalogue")}


def test_a_missing_file_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(args=["import-prices", str(tmp_path / "nowhere.json")])
    assert result.exit_code == 2 and "does not exist" in result.output
