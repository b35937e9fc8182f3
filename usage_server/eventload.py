"""A fast path for POST /v1/model-usage/events bodies that are plainly valid.

marshmallow costs about 70 µs per event, more than storing it. Most batches are well
formed, so they are checked here with the schema's own rules (its regular expressions,
limits and field loaders); anything unusual (a null, a wrong type, a bad value) is
handed to EventBatchSchema, which either accepts it or names every problem.
"""
from marshmallow import ValidationError

from .ingest import NewEvent
from .schemas import CONFIG_ID, EVENT_ID, MAX_TOKENS, EventSchema

REQUIRED = frozenset(("id", "timestamp", "modelConfigId", "promptTokens", "completionTokens"))
ALLOWED = REQUIRED | {"totalTokens", "cost", "executionTime", "billingSource", "cachedPromptTokens", "cacheWriteTokens",
                      "reasoningTokens"}
BILLING_SOURCES = ("platform", "user")
MAX_BATCH = 1000
_FIELDS = EventSchema().fields
_INSTANT, _COST, _EXECUTION = _FIELDS["timestamp"], _FIELDS["cost"], _FIELDS["execution_time"]


def token(value) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKENS


def fast_events(document: dict) -> list[NewEvent] | None:
    """The batch's events if every one is plainly valid, else None (use the schema)."""
    events = document.get("events")
    if len(document) != 1 or type(events) is not list or not 1 <= len(events) <= MAX_BATCH:
        return None
    loaded = []
    try:
        for event in events:
            if type(event) is not dict or not REQUIRED <= event.keys() <= ALLOWED:
                return None
            event_id, config_id = event["id"], event["modelConfigId"]
            prompt, completion = event["promptTokens"], event["completionTokens"]
            total = event.get("totalTokens", prompt + completion if token(prompt) and token(completion) else None)
            source = event.get("billingSource", "platform")
            cached, written = event.get("cachedPromptTokens", 0), event.get("cacheWriteTokens", 0)
            reasoning = event.get("reasoningTokens", 0)
            if not (token(cached) and token(written) and token(reasoning) and token(prompt) and token(completion)
                    and cached + written <= prompt and reasoning <= completion):
                return None
            if not (type(event_id) is str and EVENT_ID.match(event_id) and type(config_id) is str
                    and CONFIG_ID.match(config_id) and token(prompt) and token(completion) and token(total)
                    and type(event["timestamp"]) is str and source in BILLING_SOURCES):
                return None
            cost, execution = event.get("cost"), event.get("executionTime")
            if ("cost" in event and cost is None) or ("executionTime" in event and execution is None):
                return None
            loaded.append(NewEvent.from_loaded({
                "id": event_id,
                "timestamp": _INSTANT._deserialize(event["timestamp"], "timestamp", event),
                "model_config_id": config_id,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": total,
                "cost": None if cost is None else _COST._deserialize(cost, "cost", event),
                "execution_time": None if execution is None else _EXECUTION._deserialize(execution, "executionTime", event),
                "billing_source": source,
                "cached_prompt_tokens": cached,
                "cache_write_tokens": written,
                "reasoning_tokens": reasoning,
            }))
    except ValidationError:
        return None
    return loaded
