"""Calendar logic: resolving periods to ranges, time-zone offsets and time buckets.

A query covers the UTC instants [lo, hi): local midnight of startDate to local midnight
after endDate. That span is cut into segments of constant UTC offset (daylight-saving
changes end a segment); within a segment, bucket starts are plain arithmetic.
"""
import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

PERIODS = ("today", "yesterday", "last_7_days", "last_30_days", "current_month", "last_month", "current_year")
GRANULARITIES = ("hour", "day", "week", "month")
MAX_BUCKETS = 10_000
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"})
PROBE_STEP = 86_400  # offsets change at most once a day in every zone in the database
CHANGE_BLOCK = 365 * 86_400  # changes are looked up per block of this many seconds


@dataclass(frozen=True)
class Segment:
    """UTC instants [start, end) during which the zone keeps `offset` seconds."""

    start: int
    end: int
    offset: int


def preset_range(period: str, today: date) -> tuple[date, date]:
    if period == "today":
        return today, today
    if period == "yesterday":
        return today - timedelta(days=1), today - timedelta(days=1)
    if period == "last_7_days":
        return today - timedelta(days=6), today
    if period == "last_30_days":
        return today - timedelta(days=29), today
    if period == "current_month":
        return today.replace(day=1), today
    if period == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    if period == "current_year":
        return today.replace(month=1, day=1), today
    raise ValueError(period)


def resolve_dates(start: date | None, end: date | None, period: str | None, today: date):
    """The contract's range rules; returns (start, end, period name for meta)."""
    if start is None and end is None:
        period = period or "last_7_days"
        return (*preset_range(period, today), period)
    if start is None:
        start = end - timedelta(days=6)
    if end is None:
        end = today
    return start, end, "custom"


def iso_instant(ts_us: int) -> str:
    """UTC epoch microseconds as ISO 8601 with a Z, no more digits than the instant has."""
    instant = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ts_us)
    spec = "seconds" if ts_us % 1_000_000 == 0 else "milliseconds" if ts_us % 1000 == 0 else "microseconds"
    return instant.isoformat(timespec=spec).replace("+00:00", "Z")


def local_today(zone: ZoneInfo, now: datetime) -> date:
    return now.astimezone(zone).date()


def local_midnight(day: date, zone: ZoneInfo) -> int:
    """UTC epoch seconds of the first instant of `day` in `zone`."""
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())


def offset_at(instant: int, zone: ZoneInfo) -> int:
    return int(datetime.fromtimestamp(instant, zone).utcoffset().total_seconds())


def segments(lo: int, hi: int, zone: ZoneInfo) -> list[Segment]:
    """Split [lo, hi) where the zone's UTC offset changes."""
    if zone.key in UTC_NAMES:  # no changes to look for
        return [Segment(lo, hi, 0)]
    result, start, offset = [], lo, offset_at(lo, zone)
    for block in range(lo // CHANGE_BLOCK, (hi - 1) // CHANGE_BLOCK + 1):
        for change, new_offset in block_changes(zone, block):
            if lo < change < hi:
                result.append(Segment(start, change, offset))
                start, offset = change, new_offset
    result.append(Segment(start, hi, offset))
    return result


@functools.lru_cache(maxsize=4096)
def block_changes(zone: ZoneInfo, block: int) -> tuple[tuple[int, int], ...]:
    """(instant, new offset) of every change in a block of CHANGE_BLOCK seconds: found once
    per zone and block, since probing a year costs more than a whole report."""
    lo = block * CHANGE_BLOCK
    return tuple((seg.start, seg.offset) for seg in probe_segments(lo - 1, lo + CHANGE_BLOCK, zone)[1:])


def probe_segments(lo: int, hi: int, zone: ZoneInfo) -> list[Segment]:
    """Split [lo, hi) where the zone's UTC offset changes (found by bisection)."""
    result = []
    start, offset = lo, offset_at(lo, zone)
    probe = lo
    while probe < hi - 1:
        nxt = min(probe + PROBE_STEP, hi - 1)
        if offset_at(nxt, zone) == offset:
            probe = nxt
            continue
        low, high = probe, nxt  # offset(low) is the current one, offset(high) is not
        while high - low > 1:
            mid = (low + high) // 2
            if offset_at(mid, zone) == offset:
                low = mid
            else:
                high = mid
        result.append(Segment(start, high, offset))
        start, offset, probe = high, offset_at(high, zone), high
    result.append(Segment(start, hi, offset))
    return result


@functools.cache
def zone_day_offsets(zone_name: str, until_year: int) -> frozenset[int]:
    """The UTC offsets `zone_name` used from 1970 to the end of `until_year` that local-day
    rollups can serve: multiples of 15 minutes (quarter-hour slots nest in their days),
    other than whole days (UTC days serve those)."""
    zone = ZoneInfo(zone_name)
    hi = int(datetime(until_year + 1, 1, 1, tzinfo=timezone.utc).timestamp())
    return frozenset(seg.offset for seg in segments(0, hi, zone) if seg.offset % 900 == 0 and seg.offset % 86_400)


def format_offset(offset: int) -> str:
    """±HH:MM, and :SS where the offset has seconds (Monrovia until 1972), so it is exact."""
    sign = "+" if offset >= 0 else "-"
    minutes, seconds = divmod(abs(offset), 60)
    text = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return f"{text}:{seconds:02d}" if seconds else text


def hour_suffix(zone_name: str, offset: int) -> str:
    """`Z` in UTC (as the reference writes it), else the offset in effect."""
    return "Z" if zone_name in UTC_NAMES else format_offset(offset)


def count_buckets(start: date, end: date, granularity: str) -> int:
    """Number of day, week or month buckets, without building them (hours: count_hour_buckets)."""
    if granularity == "day":
        return (end - start).days + 1
    if granularity == "week":
        first = start - timedelta(days=start.weekday())
        return (end - first).days // 7 + 1
    return (end.year - start.year) * 12 + end.month - start.month + 1


def count_hour_buckets(lo: int, hi: int, zone: ZoneInfo, zone_name: str) -> int:
    """Hour buckets in [lo, hi), as bucket_labels makes them: an hour cut by a change of
    offset counts once on each side (Lord Howe's 24.5-hour day has 25). Far past the
    limit, the span's length in hours is enough and spares finding every change."""
    if hi - lo > 2 * MAX_BUCKETS * 3600:
        return -(-(hi - lo) // 3600)
    count, last = 0, None
    for seg in segments(lo, hi, zone):
        suffix = hour_suffix(zone_name, seg.offset)
        first, final = (seg.start + seg.offset) // 3600, (seg.end - 1 + seg.offset) // 3600
        count += final - first + 1 - (last == (first, suffix))
        last = (final, suffix)
    return count


def bucket_labels(start: date, end: date, granularity: str, segs: list[Segment], zone_name: str) -> list[str]:
    """Every bucket's `date` label in order: the series to zero-fill."""
    if granularity == "day":
        return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    if granularity == "week":
        day = start - timedelta(days=start.weekday())
        labels = []
        while day <= end:
            labels.append(day.isoformat())
            day += timedelta(days=7)
        return labels
    if granularity == "month":
        labels, year, month = [], start.year, start.month
        while (year, month) <= (end.year, end.month):
            labels.append(f"{year:04d}-{month:02d}-01")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return labels
    labels = []
    for seg in segs:
        suffix = hour_suffix(zone_name, seg.offset)
        first = seg.start - (seg.start + seg.offset) % 3600
        for instant in range(first, seg.end, 3600):
            label = datetime.fromtimestamp(instant + seg.offset, timezone.utc).isoformat()[:13] + ":00:00" + suffix  # not strftime: 8x slower
            if not labels or labels[-1] != label:
                labels.append(label)
    return labels
