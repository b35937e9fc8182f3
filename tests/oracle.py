"""An independent oracle: the expected GET /v1/model-usage answer in plain Python.

It shares no code with the server: it walks the same events one by one with zoneinfo
and Decimal, the slow obvious way.
"""
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

UTC_ALIASES = {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"}


def parse_instant(text):
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return instant.astimezone(timezone.utc)


def event_cost_micros(event, prices):
    """prices: model id -> (prompt USD per million, completion USD per million) as strings, then
    optionally (threshold, prompt, completion): the prices of every token once the prompt
    tokens exceed the threshold (a long-context tier)."""
    if event.get("cost") is not None:
        return int((Decimal(str(event["cost"])) * 10**6).to_integral_value(ROUND_HALF_EVEN)), True
    price = prices.get(event["_model_id"])
    if price is None:
        return 0, False
    special = getattr(price, "special", ())  # per tier: cache read, cache write, reasoning rates
    tier = 0
    if len(price) > 2 and event["promptTokens"] > price[2]:
        price, tier = price[3:], 1
    cache_read, cache_write, reasoning_rate = special[tier] if special else (None, None, None)
    prompt_rate, completion_rate = Decimal(price[0]), Decimal(price[1])
    cached, written = event.get("cachedPromptTokens", 0), event.get("cacheWriteTokens", 0)
    reasoning = event.get("reasoningTokens", 0)
    # USD per million tokens times tokens is micro-dollars; rounded half up. Token details
    # without a rate of their own cost what the tokens they are part of cost.
    micros = (Decimal(event["promptTokens"] - cached - written) * prompt_rate
              + Decimal(cached) * Decimal(prompt_rate if cache_read is None else cache_read)
              + Decimal(written) * Decimal(prompt_rate if cache_write is None else cache_write)
              + Decimal(event["completionTokens"] - reasoning) * completion_rate
              + Decimal(reasoning) * Decimal(completion_rate if reasoning_rate is None else reasoning_rate))
    return int((micros + Decimal("0.5")).to_integral_value(ROUND_FLOOR)), True


def hour_label(instant_utc: datetime, zone_name: str) -> str:
    return local_hour_label(instant_utc.astimezone(ZoneInfo(zone_name)), zone_name)


def local_hour_label(local: datetime, zone_name: str) -> str:
    """The wall-clock hour with the offset in effect at that instant, as isoformat writes it."""
    start = local.replace(minute=0, second=0, microsecond=0, tzinfo=timezone(local.utcoffset()))
    text = start.isoformat()
    return text[:-6] + "Z" if zone_name in UTC_ALIASES else text


def bucket_of(local_day: date, granularity: str) -> str:
    if granularity == "week":
        return (local_day - timedelta(days=local_day.weekday())).isoformat()
    if granularity == "month":
        return local_day.replace(day=1).isoformat()
    return local_day.isoformat()


def all_labels(start: date, end: date, granularity: str, zone_name: str) -> list[str]:
    zone = ZoneInfo(zone_name)
    if granularity != "hour":
        labels, day = [], start
        while day <= end:
            label = bucket_of(day, granularity)
            if not labels or labels[-1] != label:
                labels.append(label)
            day += timedelta(days=1)
        return labels
    # Walk instants from well before the range to well after it and keep the labels of
    # those whose local date is in range. An hourly grid meets every whole local hour; a
    # piece of an hour cut short by an offset change holds the last second before the
    # change or the change itself, so both are visited too (the change found by bisection).
    first = int(datetime(start.year, start.month, start.day, tzinfo=timezone.utc).timestamp()) - 86_400
    last = int(datetime(end.year, end.month, end.day, tzinfo=timezone.utc).timestamp()) + 2 * 86_400
    labels, seen = [], [None]

    def visit(instant):
        local = datetime.fromtimestamp(instant, zone)
        key = (local.date(), local.hour, local.utcoffset())
        if start <= key[0] <= end and key != seen[0]:
            seen[0] = key
            labels.append(local_hour_label(local, zone_name))

    previous = None
    for instant in range(first, last, 3600):
        offset = datetime.fromtimestamp(instant, zone).utcoffset()
        if previous is not None and offset != previous:
            low, high = instant - 3600, instant  # offset changes in (low, high]
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if datetime.fromtimestamp(middle, zone).utcoffset() == previous else (low, middle)
            visit(high - 1)
            visit(high)
        visit(instant)
        previous = offset
    return labels


LOCAL_TABLES = ("rollup_local_day", "rollup_local_week", "rollup_local_hour")


def local_slot(ts_us: int, offset: int, table: str) -> int:
    """Where an instant's local hour (rollup_local_hour), day or week (from Monday) starts at
    a fixed UTC offset, in epoch seconds."""
    local = datetime.fromtimestamp(ts_us // 10**6, timezone(timedelta(seconds=offset)))
    if table == "rollup_local_hour":
        return int(local.replace(minute=0, second=0).timestamp())
    midnight = local.replace(hour=0, minute=0, second=0)
    return int((midnight - timedelta(days=midnight.weekday() if table == "rollup_local_week" else 0)).timestamp())


def summed_rows(events, slots) -> list[tuple]:
    """Stored events (owner_id, ts_us, series_id, total_tokens, cost_micros, priced,
    billing_source, prompt_tokens, cached_prompt_tokens, reasoning_tokens) summed as a rollup
    keeps them: (owner_id, *slot, series_id, requests, unpriced, platform_tokens, user_tokens,
    platform_cost, user_cost, prompt_tokens, cached_prompt_tokens, reasoning_tokens) for every
    slot in `slots(ts_us)`, sorted."""
    sums = defaultdict(lambda: [0] * 9)
    for owner_id, ts_us, series_id, tokens, cost, priced, source, prompt, cached, reasoning in events:
        for slot in slots(ts_us):
            entry = sums[(owner_id, *slot, series_id)]
            entry[0] += 1
            entry[1] += 1 - priced
            entry[2 if source == "platform" else 3] += tokens
            entry[4 if source == "platform" else 5] += cost
            entry[6] += prompt
            entry[7] += cached
            entry[8] += reasoning
    return sorted(key + tuple(values) for key, values in sums.items())


def local_rollups(events, offsets) -> dict[str, list[tuple]]:
    """What the local rollups must hold: local days and weeks at every offset, local hours
    only at the offsets that are not whole hours."""
    def slots(table):
        return lambda ts_us: [(offset, local_slot(ts_us, offset, table)) for offset in offsets
                              if table != "rollup_local_hour" or offset % 3_600]

    return {table: summed_rows(events, slots(table)) for table in LOCAL_TABLES}


OWNER_TABLES = {"rollup_owner_hour": "rollup_local_hour", "rollup_owner_day": "rollup_local_day",
                "rollup_owner_week": "rollup_local_week"}  # each: UTC slots, as a local table's at offset 0


def owner_rollups(events) -> dict[str, list[tuple]]:
    """What the owner rollups must hold: the events per owner and UTC hour, day and week
    (from Monday), whatever their series: (owner_id, slot_start, requests, ...)."""
    unseried = [(owner_id, ts_us, None, *rest) for owner_id, ts_us, _series_id, *rest in events]
    return {table: [row[:2] + row[3:] for row in summed_rows(unseried, lambda ts_us, like=like: [(local_slot(ts_us, 0, like),)])]
            for table, like in OWNER_TABLES.items()}


def usd(micros: int) -> float:
    return float(Decimal(micros) / 10**6)


def expected_usage(events, configs, prices, start, end, granularity="day", zone_name="UTC", config_id=None):
    """events: dicts as sent to the API; configs: id -> {modelId, provider, modelName}."""
    zone = ZoneInfo(zone_name)
    series = {label: [0, 0, 0] for label in all_labels(start, end, granularity, zone_name)}
    models = defaultdict(lambda: {"requests": 0, "unpriced": 0, "tokens": 0, "cost": 0, "prompt": 0, "cached": 0})
    names = {}
    totals = defaultdict(int)
    seen = set()
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        if config_id is not None and event["modelConfigId"] != config_id:
            continue
        instant = parse_instant(event["timestamp"])
        local = instant.astimezone(zone)
        if not start <= local.date() <= end:
            continue
        config = configs[event["modelConfigId"]]
        cost, priced = event_cost_micros({**event, "_model_id": config["modelId"]}, prices)
        tokens = event.get("totalTokens")
        tokens = event["promptTokens"] + event["completionTokens"] if tokens is None else tokens
        label = local_hour_label(local, zone_name) if granularity == "hour" else bucket_of(local.date(), granularity)
        point = series[label]
        point[0] += 1
        point[1] += tokens
        point[2] += cost
        model = models[config["modelId"]]
        model["requests"] += 1
        model["unpriced"] += not priced
        model["tokens"] += tokens
        model["cost"] += cost
        model["prompt"] += event["promptTokens"]
        model["cached"] += event.get("cachedPromptTokens", 0)
        names[config["modelId"]] = (config["provider"], config["modelName"])
        source = event.get("billingSource", "platform")
        totals["requests"] += 1
        totals["unpriced"] += not priced
        totals[f"{source}_tokens"] += tokens
        totals[f"{source}_cost"] += cost
        totals["prompt"] += event["promptTokens"]
        totals["cached"] += event.get("cachedPromptTokens", 0)
        totals["reasoning"] += event.get("reasoningTokens", 0)
    by_model = {}
    for model_id, model in sorted(models.items(), key=lambda item: (-item[1]["cost"], -item[1]["requests"], item[0])):
        average = (Decimal(model["cost"]) / 10**6 / model["requests"]).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
        by_model[model_id] = {
            "avgCostPerRequest": float(average),
            "modelId": model_id,
            "provider": names[model_id][0],
            "requestCount": model["requests"],
            "totalCost": usd(model["cost"]),
            "totalTokens": model["tokens"],
            "modelName": names[model_id][1],
            "unpricedRequests": model["unpriced"],
            "cachedPromptTokens": model["cached"],
            "promptTokens": model["prompt"],
        }
    return {
        "summary": {
            "totalCost": usd(totals["platform_cost"] + totals["user_cost"]),
            "totalRequests": totals["requests"],
            "totalTokens": totals["platform_tokens"] + totals["user_tokens"],
            "platformCost": usd(totals["platform_cost"]),
            "platformTokens": totals["platform_tokens"],
            "userCost": usd(totals["user_cost"]),
            "userTokens": totals["user_tokens"],
            "cachedPromptTokens": totals["cached"],
            "reasoningTokens": totals["reasoning"],
            "promptTokens": totals["prompt"],
        },
        "usageByModel": by_model,
        "timeSeries": [
            {"cost": usd(cost), "date": label, "requests": requests, "tokens": tokens}
            for label, (requests, tokens, cost) in series.items()
        ],
        "unpricedRequests": totals["unpriced"],
    }


def expected_body(events, configs, prices, start, end, granularity="day", zone_name="UTC", config_id=None, *,
                  period="custom", data_source="usage-server-sqlite"):
    """The whole expected JSON body, meta included (`period` as the request resolves it)."""
    expected = expected_usage(events, configs, prices, start, end, granularity, zone_name, config_id)
    return {
        "meta": {
            "startDate": start.isoformat(),
            "endDate": end.isoformat(),
            "dataSource": data_source,
            "granularity": granularity,
            "period": period,
            "timezone": zone_name,
            "unpricedRequests": expected["unpricedRequests"],
        },
        "summary": expected["summary"],
        "usageByModel": expected["usageByModel"],
        "timeSeries": expected["timeSeries"],
    }
