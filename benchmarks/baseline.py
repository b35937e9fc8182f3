"""The straightforward design, for comparison: GROUP BY strftime over the raw events.

Given a covering index on (owner, time), this is what a usage page without
pre-aggregation runs (on PostgreSQL its own date functions, to_char and date_trunc, label
the buckets). It computes the same summary, models and time series as
GET /v1/model-usage (UTC), so the benchmark can check that both give the same answer.
The SQL lives here, not in usage_server/queries.py, because the server never runs it.
"""
from datetime import date, datetime, timedelta, timezone

from usage_server.money import micros_to_usd
from usage_server.reports import avg_cost, summary
from usage_server.storage import Connection

COVERING_INDEX = """
CREATE INDEX IF NOT EXISTS baseline_owner_ts
ON usage_event (owner_id, ts_us, series_id, billing_source, total_tokens, cost_micros, priced, prompt_tokens,
                cached_prompt_tokens, reasoning_tokens)
"""

_IN_RANGE = """
FROM usage_event
JOIN usage_series ON usage_series.id = usage_event.series_id
WHERE usage_event.owner_id = :owner_id
  AND usage_event.ts_us >= :lo
  AND usage_event.ts_us < :hi
  AND (:config_id IS NULL OR usage_series.config_id = :config_id)
"""

BUCKET_LABELS = {  # an event's bucket, labelled as the API labels it, by each engine's date functions
    "sqlite": "strftime(:fmt, usage_event.ts_us / 1000000, 'unixepoch', :shift, :align)",
    "postgresql": "to_char(date_trunc(:unit, to_timestamp(usage_event.ts_us / 1000000) AT TIME ZONE 'UTC'), :pattern)",
}

_BUCKETS = """
SELECT {label} AS bucket,
       COUNT(*) AS requests,
       SUM(usage_event.total_tokens) AS tokens,
       SUM(usage_event.cost_micros) AS cost
""" + _IN_RANGE + """
GROUP BY bucket
"""
BUCKETS = {engine: _BUCKETS.format(label=label) for engine, label in BUCKET_LABELS.items()}

MODELS = """
SELECT usage_series.model_id, usage_series.provider, usage_series.model_name,
       COUNT(*) AS requests,
       SUM(CASE WHEN usage_event.billing_source = 'platform' THEN usage_event.total_tokens ELSE 0 END) AS platform_tokens,
       SUM(CASE WHEN usage_event.billing_source = 'user' THEN usage_event.total_tokens ELSE 0 END) AS user_tokens,
       SUM(CASE WHEN usage_event.billing_source = 'platform' THEN usage_event.cost_micros ELSE 0 END) AS platform_cost,
       SUM(CASE WHEN usage_event.billing_source = 'user' THEN usage_event.cost_micros ELSE 0 END) AS user_cost,
       SUM(1 - usage_event.priced) AS unpriced,
       SUM(usage_event.prompt_tokens) AS prompt_tokens,
       SUM(usage_event.cached_prompt_tokens) AS cached_prompt_tokens,
       SUM(usage_event.reasoning_tokens) AS reasoning_tokens
""" + _IN_RANGE + """
GROUP BY usage_series.model_id, usage_series.provider, usage_series.model_name
"""

FORMATS = {  # each granularity's bucket start: SQLite's strftime format and modifiers, PostgreSQL's unit and pattern
    "hour": {"fmt": "%Y-%m-%dT%H:00:00Z", "shift": "+0 days", "align": "+0 days",
             "unit": "hour", "pattern": 'YYYY-MM-DD"T"HH24:00:00"Z"'},
    "day": {"fmt": "%Y-%m-%d", "shift": "+0 days", "align": "+0 days", "unit": "day", "pattern": "YYYY-MM-DD"},
    "week": {"fmt": "%Y-%m-%d", "shift": "-6 days", "align": "weekday 1", "unit": "week", "pattern": "YYYY-MM-DD"},
}


def labels(start: date, end: date, granularity: str) -> list[str]:
    if granularity == "hour":
        first = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
        return [(first + timedelta(hours=h)).strftime("%Y-%m-%dT%H:00:00Z") for h in range(((end - start).days + 1) * 24)]
    step, day = (7, start - timedelta(days=start.weekday())) if granularity == "week" else (1, start)
    result = []
    while day <= end:
        result.append(day.isoformat())
        day += timedelta(days=step)
    return result


def usage(conn: Connection, engine: str, owner_id: int, start: date, end: date, granularity: str,
          config_id: str | None) -> dict:
    """summary, usageByModel and timeSeries of one UTC range, from the raw events (engine: "sqlite" or
    "postgresql")."""
    lo = int(datetime(start.year, start.month, start.day, tzinfo=timezone.utc).timestamp()) * 1_000_000
    hi = lo + ((end - start).days + 1) * 86_400 * 1_000_000
    params = {"owner_id": owner_id, "lo": lo, "hi": hi, "config_id": config_id, **FORMATS[granularity]}
    points = {label: (0, 0, 0) for label in labels(start, end, granularity)}
    for bucket, requests, tokens, cost in conn.execute(BUCKETS[engine], params):
        points[bucket] = (requests, tokens, cost)
    sums = dict.fromkeys(("requests", "platform_tokens", "user_tokens", "platform_cost", "user_cost", "unpriced",
                          "prompt_tokens", "cached_prompt_tokens", "reasoning_tokens"), 0)
    models = {}
    for row in conn.execute(MODELS, params):
        model_id, provider, model_name, requests, platform_tokens, user_tokens, platform_cost, user_cost, unpriced, \
            prompt_tokens, cached_prompt_tokens, _ = row
        for name, value in zip(sums, row[3:]):
            sums[name] += value
        entry = models.setdefault(model_id, {"requests": 0, "unpriced": 0, "tokens": 0, "cost": 0, "prompt": 0,
                                             "cached": 0, "names": {}})
        entry["requests"] += requests
        entry["unpriced"] += unpriced
        entry["prompt"] += prompt_tokens
        entry["cached"] += cached_prompt_tokens
        entry["tokens"] += platform_tokens + user_tokens
        entry["cost"] += platform_cost + user_cost
        entry["names"][(provider, model_name)] = entry["names"].get((provider, model_name), 0) + requests
    by_model = {}
    for model_id, entry in sorted(models.items(), key=lambda item: (-item[1]["cost"], -item[1]["requests"], item[0])):
        provider, model_name = max(entry["names"].items(), key=lambda item: (item[1], item[0]))[0]
        by_model[model_id] = {
            "avgCostPerRequest": avg_cost(entry["cost"], entry["requests"]), "modelId": model_id, "provider": provider,
            "requestCount": entry["requests"], "totalCost": micros_to_usd(entry["cost"]),
            "totalTokens": entry["tokens"], "modelName": model_name, "unpricedRequests": entry["unpriced"],
            "cachedPromptTokens": entry["cached"], "promptTokens": entry["prompt"],
        }
    return {
        "summary": summary({None: sums})[0],  # the server's JSON shape of the same sums
        "usageByModel": by_model,
        "timeSeries": [{"cost": micros_to_usd(cost), "date": label, "requests": requests, "tokens": tokens}
                       for label, (requests, tokens, cost) in points.items()],
    }
