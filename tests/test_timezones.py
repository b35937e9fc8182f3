"""Time zones on GET /v1/model-usage: every zone, granularity and preset against the oracle.

One database for the module per engine and path (local days or not): a year of sparse
usage; events every 7 minutes (so every quarter-hour slot at every offset holds some)
around the 2026 daylight-saving changes of both hemispheres and around historic changes
(offsets that are not multiples of 15 minutes, skipped days, changes at midnight); and
events placed exactly on every change, on local midnights and twice in the repeated hour
of a fall-back. The oracle (tests/oracle.py) buckets the same events with zoneinfo;
bodies are compared whole.
"""
import bisect
import csv
import functools
import io
import itertools
import random
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_error, bearer
from oracle import all_labels, expected_usage
from seed.generator import generate, seed_owner
from support import catalogue_prices
from usage_server import api, create_app, reports, timeranges
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction
from usage_server.queries import LOCAL_DAY, LOCAL_HOUR, LOCAL_WEEK

UTC = timezone.utc
zone_info = functools.cache(ZoneInfo)  # zoneinfo's own cache keeps only a few zones
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ZONES = (
    "UTC", "America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Berlin",
    "Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide", "Australia/Lord_Howe", "Pacific/Chatham",
    "America/St_Johns", "America/Sao_Paulo", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Etc/GMT+12",
)
GRANULARITIES = ("hour", "day", "week", "month")
PERIODS = ("today", "yesterday", "last_7_days", "last_30_days", "current_month", "last_month", "current_year")
CONFIGS = (("cfg_gpt", "gpt-4o", "OpenAI"), ("cfg_haiku", "claude-haiku-4-5", "Anthropic"),
           ("cfg_tuned", "acme-tuned-7", "Acme"))  # the last is not in the catalogue: unpriced without a cost

# UTC days (first, last) of dense traffic, each holding the whole local day of a change in
# the zones concerned: the 2026 changes of the zones above (US and St John's 8 Mar / 1 Nov,
# Europe 29 Mar / 25 Oct, Australia 5 Apr / 4 Oct, Chatham 5 Apr / 27 Sep); then historic
# ones: Monrovia -0:44:30 to UTC (1972), Kiritimati -10:40 to -10:00 (1979) and its skipped
# 31 Dec 1994, Apia's skipped 30 Dec 2011, Sao Paulo's changes at midnight (2018, 2019),
# and the epoch itself.
DENSE_DAYS = (
    ("2026-03-08", "2026-03-09"), ("2026-03-28", "2026-03-29"), ("2026-04-04", "2026-04-05"),
    ("2026-09-26", "2026-09-27"), ("2026-10-03", "2026-10-04"), ("2026-10-24", "2026-10-25"),
    ("2026-11-01", "2026-11-02"),
    ("1970-01-01", "1970-01-02"), ("1972-01-06", "1972-01-07"), ("1979-09-30", "1979-10-02"),
    ("1994-12-30", "1995-01-01"), ("2011-12-29", "2011-12-31"), ("2018-11-04", "2018-11-05"),
    ("2019-02-16", "2019-02-17"),
)
SPARSE_DAYS = ("2025-11-20", "2027-01-10")  # an event every 347 minutes
HISTORIC = {  # zone -> local days with a change, and how many hour buckets each has
    "Africa/Monrovia": {"1972-01-07": 24},
    "Pacific/Kiritimati": {"1979-10-01": 24, "1994-12-31": 0},
    "Pacific/Apia": {"2011-12-30": 0},
    "America/Sao_Paulo": {"2018-11-04": 23, "2019-02-16": 25},
}
# Hour buckets on the 2026 change days: 23 and 25 where clocks jump a whole hour on the
# hour; Lord Howe jumps half an hour (a 23.5-hour day has 24 wall-clock hours, a 24.5-hour
# day 25); Chatham jumps at 02:45 (a 23-hour day still meets 24 wall-clock hours, a
# 25-hour day meets 26).
CHANGE_DAYS = {
    "America/Los_Angeles": {"2026-03-08": 23, "2026-11-01": 25},
    "America/New_York": {"2026-03-08": 23, "2026-11-01": 25},
    "America/St_Johns": {"2026-03-08": 23, "2026-11-01": 25},
    "Europe/London": {"2026-03-29": 23, "2026-10-25": 25},
    "Europe/Berlin": {"2026-03-29": 23, "2026-10-25": 25},
    "Australia/Adelaide": {"2026-04-05": 25, "2026-10-04": 23},
    "Australia/Lord_Howe": {"2026-04-05": 25, "2026-10-04": 24},
    "Pacific/Chatham": {"2026-04-05": 26, "2026-09-27": 24},
    **HISTORIC,
}
FAST_ZONES = ",".join(sorted({*ZONES, *HISTORIC}))


# --- building events ----------------------------------------------------------------------


def epoch(day: date) -> int:
    """UTC midnight of `day`, in epoch seconds."""
    return (day - EPOCH.date()).days * 86_400


def timestamp(ts_us: int, zone: str | None = None) -> str:
    """An event's timestamp text: UTC with a Z, or the local time with its offset."""
    instant = EPOCH + timedelta(microseconds=ts_us)
    if zone is None:
        return instant.isoformat().replace("+00:00", "Z")
    return instant.astimezone(zone_info(zone)).isoformat()


def payload(number: int, ts_us: int, zone: str | None = None, prefix: str = "e") -> dict:
    """Event `number`: models, token counts, costs and billing sources vary with it."""
    body = {"id": f"{prefix}{number}", "timestamp": timestamp(ts_us, zone), "modelConfigId": CONFIGS[number % 3][0],
            "promptTokens": 40 + number * 7 % 400, "completionTokens": 3 + number * 3 % 90}
    if number % 4 == 1:
        body["cost"] = float(Decimal(number % 1000) * Decimal("0.000731"))
    if number % 5 == 0:
        body["billingSource"] = "user"
    if number % 11 == 0:
        body["totalTokens"] = body["promptTokens"] + body["completionTokens"] + 5
    if number % 3 != 2:  # token details on two events in three
        body["cachedPromptTokens"] = body["promptTokens"] * (number % 7) // 7
        body["reasoningTokens"] = body["completionTokens"] * (number % 5) // 5
    if number % 6 == 0:
        body["cacheWriteTokens"] = body["promptTokens"] - body["cachedPromptTokens"]
    return body


def changes(zone: ZoneInfo, lo: int, hi: int) -> list[int]:
    """Epoch seconds in [lo, hi) where the zone's offset changes (hourly scan, then bisection)."""
    def offset(second):
        return datetime.fromtimestamp(second, zone).utcoffset()

    found = []
    for low in range(lo, hi, 3600):
        high = min(low + 3600, hi)
        if offset(low) != offset(high):
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append(high)
    return found


def edge_instants(zone_name: str, first: date, last: date) -> list[int]:
    """Microsecond instants around each change between two UTC days and around the local
    midnights next to it, and the same wall-clock time twice in each repeated hour."""
    zone = zone_info(zone_name)
    instants = []
    for change in changes(zone, epoch(first), epoch(last) + 86_400):
        before = datetime.fromtimestamp(change - 1, zone).utcoffset()
        after = datetime.fromtimestamp(change, zone).utcoffset()
        instants += [change * 10**6 + delta for delta in (-3_600_000_000, -1_000_000, -1, 0, 1, 1_000_000, 1_799_000_000)]
        repeated = int((before - after).total_seconds())
        if repeated > 0:  # fall-back: the wall clock shows [change - repeated, change) twice
            instants += [(change - repeated // 2) * 10**6, (change + repeated - repeated // 2) * 10**6]
        local = datetime.fromtimestamp(change, zone).date()
        for day in (local - timedelta(days=1), local, local + timedelta(days=1)):
            midnight = local_midnight_us(day, zone_name)
            instants += [midnight - 1, midnight, midnight + 1]
    return instants


def build_events() -> list[dict]:
    instants = []
    for first, last in DENSE_DAYS:
        lo, hi = epoch(date.fromisoformat(first)), epoch(date.fromisoformat(last)) + 86_400
        instants += [second * 10**6 + second % 7 * 1001 for second in range(lo, hi, 7 * 60 + 1)]
        for zone in {*ZONES, *HISTORIC}:
            instants += edge_instants(zone, date.fromisoformat(first), date.fromisoformat(last))
    lo, hi = (epoch(date.fromisoformat(day)) for day in SPARSE_DAYS)
    instants += [second * 10**6 for second in range(lo, hi, 347 * 60)]
    return payloads(instants, "e")


def payloads(instants: list[int], prefix: str) -> list[dict]:
    instants = sorted(instant for instant in set(instants) if instant >= 0)
    zones = itertools.cycle((None, None, *ZONES))  # some timestamps carry a local offset
    return [payload(number, instant, next(zones), prefix) for number, instant in enumerate(instants)]


def local_midnight_us(day: date, zone: str) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone_info(zone)).timestamp()) * 10**6


# --- the module's database -----------------------------------------------------------------


class Log:
    """An owner's events as sent, in time order, so the oracle is handed those near a range."""

    def __init__(self):
        self.events, self.times = [], []

    def add(self, events: list[dict]) -> None:
        events = self.events + events  # a stable sort: a re-sent event stays after the first copy
        times = self.times + [epoch_seconds(event["timestamp"]) for event in events[len(self.events):]]
        order = sorted(range(len(events)), key=times.__getitem__)
        self.events, self.times = [events[i] for i in order], [times[i] for i in order]

    def near(self, start: date, end: date) -> list[dict]:
        """The events that can fall in [start, end] in some zone: every offset is within a day."""
        lo = bisect.bisect_left(self.times, epoch(start) - 2 * 86_400)
        hi = bisect.bisect_left(self.times, epoch(end) + 3 * 86_400)
        return self.events[lo:hi]


class Store:
    """The app, a key, configs and the log of events of each owner."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()
        self.keys, self.owner_configs, self.logs = {}, {}, {}
        self.prices = catalogue_prices()

    def key(self, owner: str) -> str:
        if owner not in self.keys:
            conn = connect(self.app.config)
            with write_transaction(conn):
                self.keys[owner] = create_key(conn, owner, ["read", "write"])[1]
            conn.close()
        return self.keys[owner]

    def configs(self, owner: str) -> dict:
        """The owner's configs (id -> config as the API returns it); the three of CONFIGS at first."""
        if owner not in self.owner_configs:
            self.owner_configs[owner] = {}
            for config_id, model_id, provider in CONFIGS:
                body = {"id": config_id, "displayName": config_id, "modelId": model_id, "provider": provider}
                response = self.client.post("/v1/model-configs", json=body, headers=bearer(self.key(owner)))
                assert response.status_code == 201, response.get_json()
                self.owner_configs[owner][config_id] = response.get_json()
        return self.owner_configs[owner]

    def post(self, owner: str, events: list[dict]) -> None:
        self.configs(owner)
        for first in range(0, len(events), 1000):
            response = self.client.post("/v1/model-usage/events", json={"events": events[first:first + 1000]},
                                        headers=bearer(self.key(owner)))
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["conflicts"] == 0
        self.logs.setdefault(owner, Log()).add(events)

    def get(self, query: dict, owner: str = "tz", accept: str | None = None):
        headers = bearer(self.key(owner))
        if accept:
            headers["Accept"] = accept
        return self.client.get("/v1/model-usage", query_string=query, headers=headers)


def epoch_seconds(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


@pytest.fixture(scope="module", params=["fallback", "fast"])
def store(request, engine, new_database):
    """Every test runs twice on each engine: on day, week and month buckets read from hours
    and quarter hours, and ("fast") from the local days kept for every zone here (FAST_TIMEZONES)."""
    fast = FAST_ZONES if request.param == "fast" else ""
    app = create_app({"TESTING": True, "DATABASE": new_database(engine), "FAST_TIMEZONES": fast})
    store = Store(app)
    events = build_events()
    store.post("tz", events)
    store.post("tz", events[::997])  # re-sent: skipped, never counted twice
    store.key("nobody")  # an owner without usage, made here so that no test writes
    return store


def new_store(store, database: str, **config) -> Store:
    """An empty database kept like the module's (FAST_TIMEZONES), served with `config` too."""
    return Store(create_app({"TESTING": True, "DATABASE": database,
                             "FAST_TIMEZONES": store.app.config["FAST_TIMEZONES"], **config}))


@pytest.fixture
def own_store(store, database):
    """An empty database of the test's own, kept like the module's: for tests that write."""
    return new_store(store, database)


@pytest.fixture
def pin(monkeypatch):
    """pin(instant): "now" for every request that follows."""
    def pin_to(instant: datetime):
        monkeypatch.setattr(api, "utc_now", lambda: instant)
    return pin_to


def check(store, query: dict, start: date, end: date, granularity: str, zone: str, period: str = "custom",
          owner: str = "tz") -> dict:
    """GET and compare the whole body with the oracle's answer for the owner's events."""
    response = store.get(query, owner)
    assert response.status_code == 200, response.get_json()
    log = store.logs.get(owner, Log())
    expected = expected_usage(log.near(start, end), store.configs(owner), store.prices, start, end, granularity, zone)
    body = response.get_json()
    assert body == {
        "meta": {
            "startDate": start.isoformat(),
            "endDate": end.isoformat(),
            "dataSource": store.app.config["DATA_SOURCE"],
            "granularity": granularity,
            "period": period,
            "timezone": zone,
            "unpricedRequests": expected["unpricedRequests"],
        },
        "summary": expected["summary"],
        "usageByModel": expected["usageByModel"],
        "timeSeries": expected["timeSeries"],
    }
    assert list(body["usageByModel"]) == list(expected["usageByModel"])
    dates = [point["date"] for point in body["timeSeries"]]
    assert len(set(dates)) == len(dates)
    return body


def query_for(start: date, end: date, granularity: str, zone: str) -> dict:
    return {"startDate": start.isoformat(), "endDate": end.isoformat(), "granularity": granularity, "timezone": zone}


# --- a year across both changes, every zone and granularity -----------------------------------


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("zone", ZONES)
def test_a_year_across_both_changes_matches_the_oracle(store, zone, granularity):
    start, end = (date(2026, 3, 1), date(2026, 11, 8)) if granularity == "hour" else (date(2026, 1, 1), date(2026, 12, 31))
    body = check(store, query_for(start, end, granularity, zone), start, end, granularity, zone)
    assert body["summary"]["totalRequests"] > 0


def test_fast_runs_read_local_days_and_the_others_do_not(store):
    """What the "fast" runs prove is the local path: it must really be taken."""
    conn = connect(store.app.config)
    offsets = reports.local_offsets(conn)
    conn.close()
    query = reports.UsageQuery(1, date(2026, 1, 1), date(2026, 12, 31), "custom", "day", "America/Los_Angeles")
    grains = [grain for grain, _, _ in reports.bucket_plan(query, offsets)[1]]
    weekly = [grain for grain, _, _ in reports.bucket_plan(replace(query, granularity="week"), offsets)[1]]
    # hours as in the year-long hour test: Kolkata +5:30, Kathmandu +5:45, Adelaide +10:30/+9:30
    # (changes at local hours), Chatham +13:45/+12:45 (changes at 2:45), Los Angeles at whole hours
    hour_query = replace(query, start=date(2026, 3, 1), end=date(2026, 11, 8), granularity="hour")
    hourly = {zone: [grain for grain, _, _ in reports.bucket_plan(replace(hour_query, zone_name=zone), offsets)[1]]
              for zone in ("Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide", "Pacific/Chatham",
                           "America/Los_Angeles")}
    if not store.app.config["FAST_TIMEZONES"]:
        assert offsets == set() and not {LOCAL_DAY, LOCAL_WEEK, LOCAL_HOUR} & {*grains, *weekly}
        assert all(LOCAL_HOUR not in plan and 900 in plan for zone, plan in hourly.items() if zone != "America/Los_Angeles")
        assert hourly["America/Los_Angeles"] == [3_600, 3_600, 3_600]
        return
    # one row per series and hour: every piece local hours, no quarter hour read
    assert hourly["Asia/Kolkata"] == hourly["Asia/Kathmandu"] == [LOCAL_HOUR]
    assert hourly["Australia/Adelaide"] == [LOCAL_HOUR] * 3
    chatham = hourly["Pacific/Chatham"]  # the hours cut by a change from quarter hours
    assert chatham.count(LOCAL_HOUR) == 3 and set(chatham) == {LOCAL_HOUR, 900} and len(chatham) <= 7
    assert hourly["America/Los_Angeles"] == [3_600, 3_600, 3_600]  # rollup_hour: no local hours at whole hours
    # Los Angeles, Kolkata, Kathmandu, St John's, Lord Howe, Chatham, Kiritimati, Apia
    assert {-28_800, -25_200, 19_800, 20_700, -12_600, -9_000, 37_800, 39_600, 41_400, 45_900, 49_500, 50_400,
            -36_000, -39_600} <= offsets
    assert 0 not in offsets and all(offset % 900 == 0 for offset in offsets)
    # three segments (PST, PDT, PST): local days, with hours on the two change days only
    assert grains.count(LOCAL_DAY) == 3 and 900 not in grains and len(grains) <= 7
    assert weekly.count(LOCAL_WEEK) == 3 and 900 not in weekly and len(weekly) <= 13


@pytest.mark.parametrize("zone", [*ZONES[1:], *HISTORIC])
def test_changes_looked_up_per_block_are_the_changes_probed_over_the_range(zone):
    """segments() reads cached blocks of changes; probing the range itself must agree,
    also for ranges that start, end or meet a change on a block's edge."""
    info, rng = zone_info(zone), random.Random(zone)
    block, edges = timeranges.CHANGE_BLOCK, changes(zone_info(zone), epoch(date(2026, 1, 1)), epoch(date(2027, 1, 1)))
    bounds = [rng.randrange(0, 2_100_000_000) for _ in range(20)] + [n * block + d for n in range(1, 66, 8) for d in (-1, 0, 1)]
    bounds += [edge + d for edge in edges for d in (-1, 0, 1)]
    for lo in bounds:
        for hi in (lo + 1, lo + 3_600, lo + rng.randrange(86_400, 3 * block)):
            assert timeranges.segments(lo, hi, info) == timeranges.probe_segments(lo, hi, info), (lo, hi)


# --- daylight-saving days, hour by hour ------------------------------------------------------------


@pytest.mark.parametrize("zone, day, hours", [(zone, day, hours) for zone, days in CHANGE_DAYS.items()
                                              for day, hours in days.items()])
def test_change_days_have_one_distinct_label_per_wall_clock_hour(store, zone, day, hours):
    day = date.fromisoformat(day)
    body = check(store, query_for(day, day, "hour", zone), day, day, "hour", zone)
    assert len(body["timeSeries"]) == hours


@pytest.mark.parametrize("zone, day, first_labels", [
    ("America/Los_Angeles", "2026-03-08",
     ["2026-03-08T00:00:00-08:00", "2026-03-08T01:00:00-08:00", "2026-03-08T03:00:00-07:00"]),
    ("America/Los_Angeles", "2026-11-01",
     ["2026-11-01T00:00:00-07:00", "2026-11-01T01:00:00-07:00", "2026-11-01T01:00:00-08:00", "2026-11-01T02:00:00-08:00"]),
    ("Australia/Lord_Howe", "2026-04-05",
     ["2026-04-05T00:00:00+11:00", "2026-04-05T01:00:00+11:00", "2026-04-05T01:00:00+10:30", "2026-04-05T02:00:00+10:30"]),
    ("Pacific/Chatham", "2026-09-27",
     ["2026-09-27T00:00:00+12:45", "2026-09-27T01:00:00+12:45", "2026-09-27T02:00:00+12:45", "2026-09-27T03:00:00+13:45"]),
    ("America/St_Johns", "2026-03-08", ["2026-03-08T00:00:00-03:30", "2026-03-08T01:00:00-03:30", "2026-03-08T03:00:00-02:30"]),
    ("Asia/Kathmandu", "2026-03-08", ["2026-03-08T00:00:00+05:45"]),
    ("Etc/GMT+12", "2026-03-08", ["2026-03-08T00:00:00-12:00"]),
    ("Europe/London", "2026-01-15", ["2026-01-15T00:00:00+00:00"]),  # zero offset, but not UTC itself
    ("UTC", "2026-03-08", ["2026-03-08T00:00:00Z", "2026-03-08T01:00:00Z"]),
    ("Etc/UTC", "2026-03-08", ["2026-03-08T00:00:00Z"]),
    ("Africa/Monrovia", "1972-01-06", ["1972-01-06T00:00:00-00:44:30"]),  # the one offset with seconds
    ("Africa/Monrovia", "1972-01-07", ["1972-01-07T00:00:00+00:00"]),  # 00:44:30 came after 23:59:59
])
def test_hour_labels_are_local_wall_clock_hours_with_their_offset(store, zone, day, first_labels):
    day = date.fromisoformat(day)
    body = check(store, query_for(day, day, "hour", zone), day, day, "hour", zone)
    assert [point["date"] for point in body["timeSeries"][:len(first_labels)]] == first_labels


def test_csv_writes_the_same_hour_labels(store):
    day = date(2026, 11, 1)
    query = query_for(day, day, "hour", "America/Los_Angeles")
    labels = [point["date"] for point in store.get(query).get_json()["timeSeries"]]
    response = store.get(query, accept="text/csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(dict.fromkeys(row["date"] for row in rows)) == labels
    assert len(labels) == 25


# --- presets follow the local "today" -------------------------------------------------------------


def preset_range(period: str, today: date) -> tuple[date, date]:
    """The contract's table of presets, written out."""
    first = today.replace(day=1)
    previous = first - timedelta(days=1)
    return {
        "today": (today, today),
        "yesterday": (today - timedelta(days=1), today - timedelta(days=1)),
        "last_7_days": (today - timedelta(days=6), today),
        "last_30_days": (today - timedelta(days=29), today),
        "current_month": (first, today),
        "last_month": (previous.replace(day=1), previous),
        "current_year": (date(today.year, 1, 1), today),
    }[period]


# "now", pinned: two wall-clock instants in the zone itself, the last microsecond of a year
# and the first of the next (one of them on another UTC date than the local one in every
# zone west or east of UTC); and one instant when Australia falls back.
NOWS = {
    "new_year_eve": datetime(2025, 12, 31, 23, 59, 59, 999999),
    "new_year": datetime(2026, 1, 1),
    "australian_fall_back": datetime(2026, 4, 5, 13, 30, tzinfo=UTC),
}


def local_today(zone: str, now: str) -> tuple[datetime, date]:
    moment = NOWS[now] if NOWS[now].tzinfo else NOWS[now].replace(tzinfo=zone_info(zone))
    return moment, moment.astimezone(zone_info(zone)).date()


@pytest.fixture(scope="module")
def presets(store):
    """An owner with an event every 211 minutes, and one on each side of every local
    midnight that a preset's range starts or ends on."""
    lo, hi = epoch(date(2025, 11, 25)), epoch(date(2026, 4, 8))
    instants = [second * 10**6 for second in range(lo, hi, 211 * 60)]
    for zone in ZONES:
        for now in NOWS:
            for period in PERIODS:
                start, end = preset_range(period, local_today(zone, now)[1])
                for day in (start, end + timedelta(days=1)):
                    instants += [local_midnight_us(day, zone) - 1, local_midnight_us(day, zone)]
    store.post("presets", payloads(instants, "n"))
    return "presets"


@pytest.mark.parametrize("now", NOWS)
@pytest.mark.parametrize("zone", ZONES)
def test_every_preset_follows_the_local_today(store, presets, pin, zone, now):
    moment, today = local_today(zone, now)
    pin(moment)
    for index, period in enumerate(PERIODS):  # every preset meets every granularity across the zones
        granularity = GRANULARITIES[(index + ZONES.index(zone)) % 4]
        start, end = preset_range(period, today)
        check(store, {"period": period, "granularity": granularity, "timezone": zone}, start, end, granularity,
              zone, period, owner=presets)
    start, end = preset_range("last_7_days", today)
    check(store, {"timezone": zone}, start, end, "day", zone, "last_7_days", owner=presets)


# --- startDate and endDate are local dates ----------------------------------------------------------


def test_an_event_counts_on_its_local_date_and_in_its_own_repeated_hour(own_store):
    events = [payload(0, 1_773_799_200 * 10**6, prefix="x"),  # 2026-03-18T02:00Z: the 17th in Los Angeles
              payload(1, 1_793_521_800 * 10**6, prefix="x"),  # 2026-11-01T08:30Z: 01:30 PDT
              payload(2, 1_793_525_400 * 10**6, prefix="x")]  # 2026-11-01T09:30Z: 01:30 PST
    own_store.post("edges", events)

    def requests(query):
        body = own_store.get(query, "edges").get_json()
        return {point["date"]: point["requests"] for point in body["timeSeries"] if point["requests"]}

    la, march_17, november_1 = "America/Los_Angeles", date(2026, 3, 17), date(2026, 11, 1)
    assert requests(query_for(march_17, march_17, "day", la)) == {"2026-03-17": 1}
    assert requests(query_for(march_17, march_17, "day", "UTC")) == {}
    assert requests(query_for(march_17, march_17 + timedelta(days=1), "day", "UTC")) == {"2026-03-18": 1}
    assert requests(query_for(november_1, november_1, "hour", la)) == {
        "2026-11-01T01:00:00-07:00": 1, "2026-11-01T01:00:00-08:00": 1}
    for zone in ZONES:
        for granularity in GRANULARITIES:
            for day in (march_17, november_1):
                start, end = day - timedelta(days=1), day + timedelta(days=1)
                check(own_store, query_for(start, end, granularity, zone), start, end, granularity, zone, owner="edges")


def test_dates_alone_are_read_in_the_zone(store, pin):
    pin(datetime(2026, 3, 8, 3, 0, tzinfo=UTC))  # the 7th in Los Angeles, the 8th in Kolkata
    la, kolkata = "America/Los_Angeles", "Asia/Kolkata"
    check(store, {"startDate": "2026-03-01", "timezone": la}, date(2026, 3, 1), date(2026, 3, 7), "day", la)
    check(store, {"startDate": "2026-03-01", "timezone": kolkata}, date(2026, 3, 1), date(2026, 3, 8), "day", kolkata)
    check(store, {"endDate": "2026-03-08", "granularity": "hour", "timezone": la},
          date(2026, 3, 2), date(2026, 3, 8), "hour", la)
    check(store, {"startDate": "2026-03-08", "timezone": kolkata}, date(2026, 3, 8), date(2026, 3, 8), "day", kolkata)
    assert_error(store.get({"startDate": "2026-03-08", "timezone": la}), 400, "invalid_request", "startDate")


# --- usage from the seed generator -------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(store):
    """2,000 synthetic events over the 12 days before 3 November 2026 (Europe's and the
    US's fall-backs), stored by the generator itself; the oracle reads the same events."""
    end, days, count, seed = epoch(date(2026, 11, 3)), 12, 2000, 11
    conn = connect(store.app.config)
    stored = seed_owner(conn, "seeded", events=count, days=days, seed=seed, end=end)
    conn.close()
    assert stored == count
    events = [
        {"id": event.event_id, "timestamp": timestamp(event.ts_us), "modelConfigId": event.config_id,
         "promptTokens": event.prompt_tokens, "completionTokens": event.completion_tokens,
         "totalTokens": event.total_tokens, "billingSource": event.billing_source}
        for event in generate(count, days, seed, end, id_prefix=f"seed{seed}")
    ]
    response = store.client.get("/v1/model-configs", headers=bearer(store.key("seeded")))
    store.owner_configs["seeded"] = {config["id"]: config for config in response.get_json()["data"]}
    store.logs["seeded"] = Log()
    store.logs["seeded"].add(events)
    return "seeded"


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Europe/London", "Asia/Kathmandu", "Pacific/Chatham"])
def test_seeded_usage_matches_the_oracle(store, seeded, zone, granularity):
    start, end = date(2026, 10, 22), date(2026, 11, 2)
    body = check(store, query_for(start, end, granularity, zone), start, end, granularity, zone, owner=seeded)
    assert body["meta"]["unpricedRequests"] > 0 and len(body["usageByModel"]) == 13


# --- the 10,000-bucket limit counts hour buckets exactly ----------------------------------------------


@pytest.mark.parametrize("zone, start, days", [
    ("UTC", "2026-01-01", 417), ("America/Los_Angeles", "2026-03-08", 416), ("Australia/Lord_Howe", "2026-04-05", 417),
    ("Pacific/Chatham", "2026-04-05", 417), ("Africa/Monrovia", "1970-12-01", 416),
])
def test_the_bucket_limit_counts_hour_buckets_exactly(store, zone, start, days):
    start = date.fromisoformat(start)
    end = start + timedelta(days=days - 1)
    labels = all_labels(start, end, "hour", zone)
    response = store.get(query_for(start, end, "hour", zone), owner="nobody")
    if len(labels) <= 10_000:
        assert response.status_code == 200, response.get_json()
        assert [point["date"] for point in response.get_json()["timeSeries"]] == labels
    else:
        body = assert_error(response, 400, "invalid_request", "granularity")
        assert body["error"] == f"the range would produce {len(labels)} time buckets, more than 10000"


# --- the parameter and the server's default -----------------------------------------------------------


@pytest.mark.parametrize("name", ["Mars/Olympus", "utc", "america/los_angeles", "", " UTC", "Europe/Berlin ",
                                  "localtime", "../../etc/passwd", "/usr/share/zoneinfo/UTC", "+05:30", "GMT+5:30"])
def test_an_unknown_zone_is_a_400_naming_timezone(store, name):
    body = assert_error(store.get({"timezone": name}), 400, "invalid_request", "timezone")
    assert [item["code"] for item in body["details"]] == ["UNKNOWN_TIMEZONE"]


def test_the_default_zone_applies_without_the_parameter_and_is_echoed(store, pin, database):
    pin(datetime(2026, 4, 5, 13, 30, tzinfo=UTC))
    # a database of its own (this start-up registers Kathmandu's offsets), holding the
    # module's events near every date asked about below
    other = new_store(store, database, DEFAULT_TIMEZONE="Asia/Kathmandu")
    other.post("tz", store.logs["tz"].near(date(2026, 3, 1), date(2026, 4, 5)))
    for query in ({"granularity": "hour"}, {"period": "last_month"}, {"startDate": "2026-03-28", "endDate": "2026-04-05"}):
        answer = other.get(query).get_json()
        assert answer["meta"]["timezone"] == "Asia/Kathmandu"
        assert answer == store.get({**query, "timezone": "Asia/Kathmandu"}).get_json()
        assert other.get({**query, "timezone": "UTC"}).get_json() == store.get({**query, "timezone": "UTC"}).get_json()
    check(store, {"granularity": "hour", "timezone": "Asia/Kathmandu"}, date(2026, 3, 30), date(2026, 4, 5), "hour",
          "Asia/Kathmandu", "last_7_days")


def test_the_default_zone_comes_from_the_environment(store, monkeypatch, database):
    monkeypatch.setenv("USAGE_SERVER_DEFAULT_TIMEZONE", "America/St_Johns")
    other = new_store(store, database)
    assert other.app.config["DEFAULT_TIMEZONE"] == "America/St_Johns"
    assert other.get({}).get_json()["meta"]["timezone"] == "America/St_Johns"


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "localtime"])
def test_an_unknown_default_zone_stops_the_app_from_starting(tmp_path, name):
    with pytest.raises(ValueError, match="DEFAULT_TIMEZONE"):
        create_app({"TESTING": True, "DATABASE": str(tmp_path / "usage.sqlite"), "DEFAULT_TIMEZONE": name})


# --- properties over random zones, ranges and events ------------------------------------------------

ALL_ZONES = sorted(available_timezones() - {"localtime"})
# Ranges worth drawing more often than chance would: offsets that are not multiples of 15
# minutes (Monrovia until 1972), changes of 40, 45 and 30 minutes (Kiritimati 1979,
# Kathmandu 1986, Pyongyang 2015, Caracas 2007, Lord Howe, Chatham), skipped days.
SPECIAL_STARTS = (
    ("Africa/Monrovia", "1970-01-01"), ("Africa/Monrovia", "1972-01-03"), ("Pacific/Kiritimati", "1979-09-27"),
    ("Pacific/Kiritimati", "1994-12-27"), ("Pacific/Apia", "2011-12-26"), ("Asia/Kathmandu", "1985-12-27"),
    ("Asia/Pyongyang", "2015-08-11"), ("America/Caracas", "2007-12-05"), ("Australia/Lord_Howe", "2026-09-30"),
    ("Pacific/Chatham", "2026-04-01"), ("America/Sao_Paulo", "2018-10-31"), ("Europe/Berlin", "2026-10-21"),
)
owners = itertools.count()


@st.composite
def scenarios(draw):
    """(zone, start, end, granularity, events): events around and inside the range, some
    of them exactly on a change of offset or on a local midnight."""
    if draw(st.booleans()):
        zone, first = draw(st.sampled_from(SPECIAL_STARTS))
        start = date.fromisoformat(first) + timedelta(days=draw(st.integers(0, 6)))
    else:
        zone, start = draw(st.sampled_from(ALL_ZONES)), draw(st.dates(date(1970, 1, 1), date(2037, 12, 31)))
    end = start + timedelta(days=draw(st.integers(0, 4)))
    lo, hi = max(0, epoch(start) - 86_400), epoch(end) + 2 * 86_400
    edges = [instant for instant in edge_instants(zone, start - timedelta(days=1), end + timedelta(days=1))
             if lo * 10**6 <= instant < hi * 10**6]
    for offset in range((end - start).days + 2):
        midnight = local_midnight_us(start + timedelta(days=offset), zone)
        edges += [instant for instant in (midnight - 1, midnight) if instant >= 0]
    instant = st.one_of(st.integers(lo * 10**6, hi * 10**6 - 1), st.sampled_from(edges))
    drawn = draw(st.lists(st.tuples(instant, st.integers(0, 10**4)), max_size=25))
    events = [{**payload(variety, ts_us), "id": f"p{index}"} for index, (ts_us, variety) in enumerate(drawn)]
    return zone, start, end, draw(st.sampled_from(GRANULARITIES)), events


def micros(value) -> int:
    scaled = Decimal(str(value)) * 10**6
    assert scaled == scaled.to_integral_value(), value
    return int(scaled)


def additive(body: dict) -> tuple[dict, dict]:
    """What adds up across days: the summary (money in micro-dollars) and each model's totals."""
    summary = {name: micros(value) if name.endswith("Cost") else value for name, value in body["summary"].items()}
    summary["unpricedRequests"] = body["meta"]["unpricedRequests"]
    models = {model_id: (model["requestCount"], model["totalTokens"], micros(model["totalCost"]))
              for model_id, model in body["usageByModel"].items()}
    return summary, models


@settings(max_examples=80, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario=scenarios())
def test_random_zones_ranges_and_events(own_store, scenario):
    zone, start, end, granularity, events = scenario
    owner = f"prop{next(owners)}"
    own_store.configs(owner)
    if events:
        own_store.post(owner, events)
    body = check(own_store, query_for(start, end, granularity, zone), start, end, granularity, zone, owner=owner)

    summary, models = additive(body)
    points = body["timeSeries"]
    assert sum(point["requests"] for point in points) == summary["totalRequests"]
    assert sum(point["tokens"] for point in points) == summary["totalTokens"]
    assert sum(micros(point["cost"]) for point in points) == summary["totalCost"]
    assert sum(model[2] for model in models.values()) == summary["totalCost"]

    daily = granularity if granularity in ("hour", "day") else "day"
    whole = body if daily == granularity else own_store.get(query_for(start, end, daily, zone), owner).get_json()
    series, summed, per_model = [], dict.fromkeys(summary, 0), {}
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        part = own_store.get(query_for(day, day, daily, zone), owner).get_json()
        part_summary, part_models = additive(part)
        series += part["timeSeries"]
        for name, value in part_summary.items():
            summed[name] += value
        for model_id, totals in part_models.items():
            per_model[model_id] = tuple(map(sum, zip(per_model.get(model_id, (0, 0, 0)), totals)))
    assert series == whole["timeSeries"]
    assert summed == summary
    assert per_model == models
