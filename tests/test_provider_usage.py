"""examples/provider_usage.py: the real OpenAI and Anthropic SDK response objects (built from
the JSON those APIs answer, with the SDKs' own types, no network) become events the server
stores and reports as the providers counted them."""
import importlib.util
from datetime import datetime, timezone
from pathlib import Path

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from conftest import bearer, create_config, post_events

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "provider_usage.py"
FINISHED = datetime(2026, 3, 18, 10, 0, 2, 500_000, tzinfo=timezone.utc)


def load_example():
    spec = importlib.util.spec_from_file_location("provider_usage", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


provider_usage = load_example()


def chat_completion(completion_id: str, usage: dict) -> ChatCompletion:
    return ChatCompletion.model_validate({
        "id": completion_id, "object": "chat.completion", "created": 1_773_828_001, "model": "o4-mini-2025-04-16",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "Hello!", "refusal": None}}],
        "usage": usage, "service_tier": "default", "system_fingerprint": None,
    })


def message(message_id: str, usage: dict) -> Message:
    return Message.model_validate({
        "id": message_id, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": usage,
    })


OPENAI_CACHED = chat_completion("chatcmpl-CachedAndReasoning1", {
    "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                  "rejected_prediction_tokens": 0},
})
OPENAI_PLAIN = chat_completion("chatcmpl-NoDetails2", {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29})
ANTHROPIC_CACHED = message("msg_01CacheReadAndWrite", {
    "input_tokens": 21, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 248, "output_tokens": 503,
})
ANTHROPIC_PLAIN = message("msg_01NoCache", {"input_tokens": 12, "output_tokens": 6, "cache_read_input_tokens": None,
                                             "cache_creation_input_tokens": None})


def test_openai_usage_maps_field_for_field():
    assert provider_usage.openai_event(OPENAI_CACHED, "cfg_openai", execution_time=1.5) == {
        "id": "chatcmpl-CachedAndReasoning1", "timestamp": "2026-03-18T10:00:01Z", "modelConfigId": "cfg_openai",
        "promptTokens": 2006, "completionTokens": 300, "totalTokens": 2306, "cachedPromptTokens": 1920,
        "reasoningTokens": 192, "executionTime": 1.5}
    plain = provider_usage.openai_event(OPENAI_PLAIN, "cfg_openai")
    assert (plain["cachedPromptTokens"], plain["reasoningTokens"], "executionTime" in plain) == (0, 0, False)


def test_anthropic_usage_sums_every_input_token_into_prompt_tokens():
    assert provider_usage.anthropic_event(ANTHROPIC_CACHED, "cfg_claude", FINISHED, execution_time=2.25) == {
        "id": "msg_01CacheReadAndWrite", "timestamp": "2026-03-18T10:00:02.500000Z", "modelConfigId": "cfg_claude",
        "promptTokens": 21 + 1800 + 248, "completionTokens": 503, "cachedPromptTokens": 1800, "cacheWriteTokens": 248,
        "reasoningTokens": 0, "executionTime": 2.25}
    plain = provider_usage.anthropic_event(ANTHROPIC_PLAIN, "cfg_claude", FINISHED)
    assert (plain["promptTokens"], plain["cachedPromptTokens"], plain["cacheWriteTokens"]) == (12, 0, 0)


def test_the_server_reports_what_the_providers_counted(client, make_key, frozen_now):
    key = make_key()
    create_config(client, key, "cfg_openai", "o4-mini", "OpenAI")
    create_config(client, key, "cfg_claude", "claude-sonnet-4-5", "Anthropic")
    events = [provider_usage.openai_event(OPENAI_CACHED, "cfg_openai"), provider_usage.openai_event(OPENAI_PLAIN, "cfg_openai"),
              provider_usage.anthropic_event(ANTHROPIC_CACHED, "cfg_claude", FINISHED),
              provider_usage.anthropic_event(ANTHROPIC_PLAIN, "cfg_claude", FINISHED)]
    assert post_events(client, key, events) == {"accepted": 4, "duplicates": 0, "conflicts": 0}
    assert post_events(client, key, events) == {"accepted": 0, "duplicates": 4, "conflicts": 0}  # ids: the providers'
    details = {config: {item["id"]: item for item in client.get(f"/v1/model-usage/{config}", headers=bearer(key))
                        .get_json()["recentUsage"]} for config in ("cfg_openai", "cfg_claude")}
    tokens = ("promptTokens", "completionTokens", "totalTokens", "cachedPromptTokens", "cacheWriteTokens",
              "reasoningTokens")
    assert {item_id: tuple(item[name] for name in tokens) for config in details.values()
            for item_id, item in config.items()} == {
        "chatcmpl-CachedAndReasoning1": (2006, 300, 2306, 1920, 0, 192),
        "chatcmpl-NoDetails2": (19, 10, 29, 0, 0, 0),
        "msg_01CacheReadAndWrite": (2069, 503, 2572, 1800, 248, 0),
        "msg_01NoCache": (12, 6, 18, 0, 0, 0),
    }
    body = client.get("/v1/model-usage?period=today", headers=bearer(key)).get_json()
    assert {name: body["summary"][name] for name in ("promptTokens", "cachedPromptTokens", "reasoningTokens")} == {
        "promptTokens": 2006 + 19 + 2069 + 12, "cachedPromptTokens": 1920 + 1800, "reasoningTokens": 192}
    assert {model_id: (model["promptTokens"], model["cachedPromptTokens"]) for model_id, model in
            body["usageByModel"].items()} == {"o4-mini": (2025, 1920), "claude-sonnet-4-5": (2081, 1800)}


@pytest.mark.parametrize("usage", [
    {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 5000, "cache_creation_input_tokens": 0},
    {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 7000},
])
def test_an_answer_read_wholly_from_or_into_the_cache_is_valid(client, make_key, usage):
    key = make_key()
    create_config(client, key, "cfg_claude", "claude-sonnet-4-5", "Anthropic")
    event = provider_usage.anthropic_event(message("msg_01Edge", usage), "cfg_claude", FINISHED)
    assert post_events(client, key, [event])["accepted"] == 1
