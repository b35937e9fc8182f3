"""The usage report of GET /v1/model-usage, assembled from rollup queries.

A query's UTC span is covered by "pieces": runs of whole slots of the coarsest rollup
whose slots never straddle a bucket boundary (a UTC day cannot serve a day bucket
in UTC-8, an hour can), with finer rollups, and at worst the raw events, at the edges.
Each piece is one query summing its slots (labelled with their buckets in Python), so
the work grows with the buckets asked for, not with the events stored. Where the database keeps local days and weeks
at a segment's offset (FAST_TIMEZONES), they serve its day, week and month buckets, and
local hours its hour buckets at offsets that are not whole hours.
"""
import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from . import queries
from .money import MICROS_PER_USD, micros_to_usd
from .queries import LOCAL_GRAINS, SLOT_PHASE, local_serves
from .storage import Connection
from .timeranges import bucket_labels, hour_suffix, local_midnight, segments

GRAINS = (604_800, 86_400, 3_600, 900, 1)  # rollup_week, _day, _hour, _quarter, usage_event
GRANULARITY_SECONDS = {"hour": 3_600, "day": 86_400, "week": 604_800, "month": 86_400}
BUCKET_FORMATS = {  # (strftime format, first modifier, second modifier)
    "hour": ("%Y-%m-%dT%H:00:00", "+0 days", "+0 days"),
    "day": ("%Y-%m-%d", "+0 days", "+0 days"),
    "week": ("%Y-%m-%d", "-6 days", "weekday 1"),
    "month": ("%Y-%m-01", "+0 days", "+0 days"),
}
TOTAL_FIELDS = ("requests", "unpriced", "platform_tokens", "user_tokens", "platform_cost", "user_cost",
                "prompt_tokens", "cached_prompt_tokens", "reasoning_tokens")


@dataclass(frozen=True)
class UsageQuery:
    owner_id: int
    start: date
    end: date
    period: str
    granularity: str
    zone_name: str
    config_id: str | None = None


def cover(lo: int, hi: int, offset: int, max_grain: int) -> list[tuple[int, int, int]]:
    """(grain, start, end) pieces covering [lo, hi), coarsest first where aligned."""
    for grain in GRAINS:
        if grain > max_grain or offset % grain:
            continue
        phase = SLOT_PHASE.get(grain, 0)
        first, last = lo + -(lo + phase) % grain, hi - (hi + phase) % grain
        if first >= last:
            continue
        return cover(lo, first, offset, grain - 1) + [(grain, first, last)] + cover(last, hi, offset, grain - 1)
    return []


def local_cover(lo: int, hi: int, offset: int, max_grain: int) -> list[tuple]:
    """Like cover(), with the local weeks, days and hours kept at `offset`: finer slots remain
    only where a segment starts or ends mid-day or mid-hour (at a change of offset)."""
    for key, (grain, phase) in LOCAL_GRAINS.items():
        first, last = lo + -(lo + offset + phase) % grain, hi - (hi + offset + phase) % grain
        if grain > max_grain or first >= last or not local_serves(key, offset):
            continue
        return (local_cover(lo, first, offset, grain - 1) + [(key, first, last)]
                + local_cover(last, hi, offset, grain - 1))
    return cover(lo, hi, offset, 3_600)


def local_offsets(db: Connection) -> frozenset[int]:
    """The offsets the local rollups hold now (read in the request's snapshot)."""
    return frozenset(row[0] for row in db.execute(queries.LOCAL_OFFSETS))


def snapshot_head(db: Connection, owner_id: int) -> tuple[int, frozenset[int]]:
    """The owner's usage version (for the ETag) and the local offsets, in one statement."""
    version, offsets = 0, []
    for row in db.execute(queries.VERSION_AND_OFFSETS, {"owner_id": owner_id}):
        if row[1] is None:
            version = row[0]
        else:
            offsets.append(row[1])
    return version, frozenset(offsets)


def span(query: UsageQuery) -> tuple[int, int]:
    zone = ZoneInfo(query.zone_name)
    return local_midnight(query.start, zone), local_midnight(query.end + timedelta(days=1), zone)


EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def slot_label(instant: int, granularity: str) -> str:
    """The bucket label of a local instant (epoch seconds plus the offset), as bucket_labels
    writes it, hour suffix aside."""
    if granularity == "hour":
        return datetime.fromtimestamp(instant, timezone.utc).isoformat()[:13] + ":00:00"
    day = date.fromordinal(EPOCH_ORDINAL + instant // 86_400)
    if granularity == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    return (day.replace(day=1) if granularity == "month" else day).isoformat()


@functools.lru_cache(maxsize=64)
def range_plan(start: date, end: date, granularity: str, zone_name: str,
               offsets: frozenset[int]) -> tuple[tuple[str, ...], tuple[tuple, ...]]:
    """Every bucket label in order, and per piece (grain, offset, first, last, label suffix,
    a memo of its slots' labels, filled as slots are read; None for raw events). The same for
    every owner, so worked out once per range, zone and set of local offsets: dashboards ask
    for the same few ranges over and over, and a label costs more in a query than in Python.
    Labels are made only for slots that hold usage: a range of a century has millions of
    slots, and no work here may grow with the range rather than with the data read."""
    zone = ZoneInfo(zone_name)
    lo, hi = local_midnight(start, zone), local_midnight(end + timedelta(days=1), zone)
    segs = segments(lo, hi, zone)
    labels = tuple(bucket_labels(start, end, granularity, segs, zone_name))
    pieces = []
    for seg in segs:
        suffix = hour_suffix(zone_name, seg.offset) if granularity == "hour" else ""
        if seg.offset in offsets:
            spans = local_cover(seg.start, seg.end, seg.offset, GRANULARITY_SECONDS[granularity])
        else:
            spans = cover(seg.start, seg.end, seg.offset, GRANULARITY_SECONDS[granularity])
        for grain, first, last in spans:
            seconds = LOCAL_GRAINS[grain][0] if grain in LOCAL_GRAINS else grain
            pieces.append((grain, seg.offset, first, last, suffix, None if seconds == 1 else {}))
    return labels, tuple(pieces)


def piece_params(query: UsageQuery, offset: int, first: int, last: int) -> dict:
    fmt, shift, align = BUCKET_FORMATS[query.granularity]
    return {"fmt": fmt, "shift": shift, "align": align, "offset": offset,
            "owner_id": query.owner_id, "config_id": query.config_id, "lo": first, "hi": last}


def bucket_plan(query: UsageQuery, offsets: frozenset[int] = frozenset()) -> tuple[tuple[str, ...], list[tuple]]:
    """Every bucket label in order, and (grain, query parameters, label suffix) per piece;
    `offsets`: those with local rollups."""
    labels, pieces = range_plan(query.start, query.end, query.granularity, query.zone_name, offsets)
    return labels, [(grain, piece_params(query, offset, first, last), suffix)
                    for grain, offset, first, last, suffix, _ in pieces]


def time_series(db: Connection, query: UsageQuery, offsets: frozenset[int]) -> list[dict]:
    """One zero-filled point per bucket, in order."""
    labels, pieces = range_plan(query.start, query.end, query.granularity, query.zone_name, offsets)
    points = {label: [0, 0, 0] for label in labels}
    for grain, offset, first, last, suffix, slot_labels in pieces:
        params = piece_params(query, offset, first, last)
        if slot_labels is None:  # raw events, labelled by the database
            rows = ((points[bucket + suffix], requests, tokens, cost)
                    for bucket, requests, tokens, cost in db.execute(queries.EVENT_BUCKETS, params))
        else:
            owner_rollup = query.config_id is None and grain in queries.OWNER_SLOT_SUMS  # one row per slot
            statement = queries.OWNER_SLOT_SUMS[grain] if owner_rollup else queries.SLOT_SUMS[grain]
            rows = ((points[slot_labels.get(slot) or slot_labels.setdefault(
                        slot, slot_label(slot + offset, query.granularity) + suffix)], requests, tokens, cost)
                    for slot, requests, tokens, cost in db.execute(statement, params))
        for point, requests, tokens, cost in rows:
            point[0] += requests
            point[1] += tokens
            point[2] += cost
    return [
        {"cost": cost / MICROS_PER_USD, "date": label, "requests": requests, "tokens": tokens}  # micros_to_usd, inlined
        for label, (requests, tokens, cost) in points.items()
    ]


def series_totals(db: Connection, query: UsageQuery) -> dict[int, dict]:
    """Totals per usage series over the whole range (bucket boundaries do not matter)."""
    lo, hi = span(query)
    totals: dict[int, dict] = {}
    for grain, first, last in cover(lo, hi, 0, GRAINS[0]):
        params = {"owner_id": query.owner_id, "config_id": query.config_id, "lo": first, "hi": last}
        for row in db.execute(queries.SERIES_TOTALS[grain], params):
            entry = totals.setdefault(row["series_id"], dict.fromkeys(TOTAL_FIELDS, 0))
            for field in TOTAL_FIELDS:
                entry[field] += row[field]
    return totals


def avg_cost(cost_micros: int, requests: int) -> float:
    average = Decimal(cost_micros) / Decimal(10**6) / requests
    return float(average.quantize(Decimal("0.000001"), ROUND_HALF_EVEN))


def usage_by_model(db: Connection, query: UsageQuery, totals: dict[int, dict]) -> dict[str, dict]:
    """Fold series into models, ordered by cost (then requests, then id)."""
    models: dict[str, dict] = {}
    for row in db.execute(queries.OWNER_SERIES, {"owner_id": query.owner_id}):
        total = totals.get(row["id"])
        if not total or not total["requests"]:
            continue
        model = models.setdefault(row["model_id"], {"requests": 0, "unpriced": 0, "tokens": 0, "cost": 0, "prompt": 0,
                                                    "cached": 0, "names": {}})
        model["requests"] += total["requests"]
        model["unpriced"] += total["unpriced"]
        model["prompt"] += total["prompt_tokens"]
        model["cached"] += total["cached_prompt_tokens"]
        model["tokens"] += total["platform_tokens"] + total["user_tokens"]
        model["cost"] += total["platform_cost"] + total["user_cost"]
        names = (row["provider"], row["model_name"])
        model["names"][names] = model["names"].get(names, 0) + total["requests"]
    ordered = sorted(models.items(), key=lambda item: (-item[1]["cost"], -item[1]["requests"], item[0]))
    result = {}
    for model_id, model in ordered:
        provider, model_name = max(model["names"].items(), key=lambda item: (item[1], item[0]))[0]
        result[model_id] = {
            "avgCostPerRequest": avg_cost(model["cost"], model["requests"]),
            "modelId": model_id,
            "provider": provider,
            "requestCount": model["requests"],
            "totalCost": micros_to_usd(model["cost"]),
            "totalTokens": model["tokens"],
            "modelName": model_name,
            "unpricedRequests": model["unpriced"],
            "cachedPromptTokens": model["cached"],
            "promptTokens": model["prompt"],
        }
    return result


def summary(totals: dict[int, dict]) -> dict:
    sums = dict.fromkeys(TOTAL_FIELDS, 0)
    for total in totals.values():
        for field in TOTAL_FIELDS:
            sums[field] += total[field]
    return {
        "totalCost": micros_to_usd(sums["platform_cost"] + sums["user_cost"]),
        "totalRequests": sums["requests"],
        "totalTokens": sums["platform_tokens"] + sums["user_tokens"],
        "platformCost": micros_to_usd(sums["platform_cost"]),
        "platformTokens": sums["platform_tokens"],
        "userCost": micros_to_usd(sums["user_cost"]),
        "userTokens": sums["user_tokens"],
        "cachedPromptTokens": sums["cached_prompt_tokens"],
        "reasoningTokens": sums["reasoning_tokens"],
        "promptTokens": sums["prompt_tokens"],
    }, sums["unpriced"]


def model_usage(db: Connection, query: UsageQuery, data_source: str, offsets: frozenset[int]) -> dict:
    totals = series_totals(db, query)
    summary_part, unpriced = summary(totals)
    return {
        "meta": {
            "startDate": query.start.isoformat(),
            "endDate": query.end.isoformat(),
            "dataSource": data_source,
            "granularity": query.granularity,
            "period": query.period,
            "timezone": query.zone_name,
            "unpricedRequests": unpriced,
        },
        "summary": summary_part,
        "usageByModel": usage_by_model(db, query, totals),
        "timeSeries": time_series(db, query, offsets),
    }
