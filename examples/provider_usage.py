"""Usage events from the responses of the OpenAI and Anthropic Python SDKs.

Each function takes the SDK's own response object and returns the event to send in
POST /v1/model-usage/events; the provider's response id is the event id, so sending it
again is harmless. Copy this module into an application: it needs neither SDK itself,
only the response objects they return. See docs/writing-usage.md.
"""
from datetime import datetime, timezone


def iso(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def openai_event(completion, model_config_id: str, execution_time: float | None = None) -> dict:
    """An `openai.types.chat.ChatCompletion` as an event.

    OpenAI counts cached tokens inside `prompt_tokens` and reasoning tokens inside
    `completion_tokens`, as the server does: both are sent as they come.
    """
    usage = completion.usage
    prompt_details, completion_details = usage.prompt_tokens_details, usage.completion_tokens_details
    event = {
        "id": completion.id,
        "timestamp": iso(datetime.fromtimestamp(completion.created, timezone.utc)),
        "modelConfigId": model_config_id,
        "promptTokens": usage.prompt_tokens,
        "completionTokens": usage.completion_tokens,
        "totalTokens": usage.total_tokens,
        "cachedPromptTokens": (prompt_details and prompt_details.cached_tokens) or 0,
        "reasoningTokens": (completion_details and completion_details.reasoning_tokens) or 0,
    }
    if execution_time is not None:
        event["executionTime"] = execution_time
    return event


def anthropic_event(message, model_config_id: str, finished_at: datetime,
                    execution_time: float | None = None) -> dict:
    """An `anthropic.types.Message` as an event; `finished_at`: when the call returned (a
    Message carries no time of its own).

    Anthropic's `input_tokens` leaves out the tokens read from or written to the prompt
    cache; the server's `promptTokens` counts every input token, so the three are summed.
    """
    usage = message.usage
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    output_details = getattr(usage, "output_tokens_details", None)  # SDKs of 2026 on
    thinking = output_details.thinking_tokens if output_details else 0
    event = {
        "id": message.id,
        "timestamp": iso(finished_at),
        "modelConfigId": model_config_id,
        "promptTokens": usage.input_tokens + cache_read + cache_write,
        "completionTokens": usage.output_tokens,
        "cachedPromptTokens": cache_read,
        "cacheWriteTokens": cache_write,
        "reasoningTokens": thinking,
    }
    if execution_time is not None:
        event["executionTime"] = execution_time
    return event
