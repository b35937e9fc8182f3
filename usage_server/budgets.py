"""Budgets: their current period, what was spent in it, and threshold alerts raised in the
same write transaction as the usage that reaches them.

Spent is what GET /v1/model-usage totals for the period's local dates in the budget's zone,
computed by the same report code on the rollups (reports.series_totals), never by scanning
events. The unique key (budget, period start, threshold) of budget_alert, with INSERT ... ON
CONFLICT DO NOTHING, makes each alert exactly once however many writers race (they are
serialised by the write lock) and however often a batch is re-sent (duplicates add no usage).
"""
import json
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from . import budget_queries as sql
from .money import micros_to_usd
from .reports import UsageQuery, series_totals
from .storage import Connection
from .timeranges import iso_instant, local_midnight


def utc_now() -> datetime:
    """The current instant; tests replace it to pin the current period."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Period:
    """A budget's period: local dates first..last, and the UTC instants [start, end)."""

    first: date
    last: date
    start: int  # epoch seconds
    end: int


def current_period(period: str, zone_name: str, now: datetime) -> Period:
    """The day, ISO week (from Monday) or month holding `now`, from local midnight to local
    midnight in the zone (a daylight-saving day lasts 23, 24.5 or 25 hours, as it does)."""
    zone = ZoneInfo(zone_name)
    today = now.astimezone(zone).date()
    if period == "day":
        first = last = today
    elif period == "week":
        first = today - timedelta(days=today.weekday())
        last = first + timedelta(days=6)
    else:
        first = today.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return Period(first, last, local_midnight(first, zone), local_midnight(last + timedelta(days=1), zone))


def spent_micros(db: Connection, owner_id: int, budget, period: Period) -> int:
    """The usage of the budget's scope in the period, exactly as GET /v1/model-usage totals
    it for startDate=first, endDate=last in the budget's zone."""
    query = UsageQuery(owner_id, period.first, period.last, "custom", "day", budget["timezone"], budget["config_id"])
    return sum(total["platform_cost"] + total["user_cost"] for total in series_totals(db, query).values())


def reached(amount_micros: int, thresholds: list[int], spent: int) -> list[int]:
    """The thresholds with spent ≥ amount × threshold / 100, in integers."""
    return [threshold for threshold in thresholds if spent * 100 >= amount_micros * threshold]


def forecast_micros(spent: int, period: Period, now: datetime) -> int:
    """Spent projected linearly to the period's end: spent / elapsed × length (spent itself
    before the period has begun; whole micro-dollars, rounded down)."""
    elapsed_us = int(now.timestamp() * 1_000_000) - period.start * 1_000_000
    length_us = (period.end - period.start) * 1_000_000
    if elapsed_us <= 0:
        return spent
    return spent * length_us // min(elapsed_us, length_us)


def percent(spent: int, amount: int) -> float:
    return float((Decimal(spent) * 100 / Decimal(amount)).quantize(Decimal("0.01"), ROUND_HALF_EVEN))


def budget_json(db: Connection, budget, now: datetime | None = None) -> dict:
    """A budget as the API shows it, with its current period's figures (never its secret)."""
    now = now or utc_now()
    period = current_period(budget["period"], budget["timezone"], now)
    spent = spent_micros(db, budget["owner_id"], budget, period)
    amount, thresholds = budget["amount_micros"], json.loads(budget["thresholds"])
    return {
        "id": budget["id"],
        "name": budget["name"],
        "amount": micros_to_usd(amount),
        "period": budget["period"],
        "timezone": budget["timezone"],
        "modelConfigId": budget["config_id"],
        "thresholds": thresholds,
        "webhookUrl": budget["webhook_url"],
        "createdAt": budget["created_at"],
        "current": {
            "start": iso_instant(period.start * 1_000_000),
            "end": iso_instant(period.end * 1_000_000),
            "spent": micros_to_usd(spent),
            "remaining": micros_to_usd(amount - spent),
            "percentUsed": percent(spent, amount),
            "forecast": micros_to_usd(forecast_micros(spent, period, now)),
            "crossed": reached(amount, thresholds, spent),
        },
    }


def create_budget(db: Connection, owner_id: int, fields: dict, now: datetime | None = None) -> str:
    """Store a budget; call inside a write transaction. The thresholds its current period has
    already reached are recorded as not raised, so they never alert in this period."""
    now = now or utc_now()
    budget_id = f"bud_{secrets.token_hex(10)}"
    row = {"id": budget_id, "owner_id": owner_id, "created_at": iso_instant(int(now.timestamp()) * 1_000_000),
           **fields, "thresholds": json.dumps(fields["thresholds"])}
    db.execute(sql.INSERT_BUDGET, row)
    period = current_period(row["period"], row["timezone"], now)
    spent = spent_micros(db, owner_id, row, period)
    for threshold in reached(row["amount_micros"], fields["thresholds"], spent):
        insert_alert(db, row, period, threshold, spent, now, raised=False)
    return budget_id


def insert_alert(db: Connection, budget, period: Period, threshold: int, spent: int, now: datetime,
                 raised: bool = True) -> bool:
    """Record a threshold reached in a period, once: False when it already was. A raised alert
    of a budget with a webhook also goes into the outbox, due at once."""
    alert_id = f"alr_{secrets.token_hex(10)}"
    inserted = db.execute(sql.INSERT_ALERT, {
        "owner_id": budget["owner_id"], "id": alert_id, "budget_id": budget["id"], "period_start": period.start, "period_end": period.end,
        "threshold": threshold, "spent_micros": spent, "crossed_at": iso_instant(int(now.timestamp() * 1000) * 1000),
        "raised": int(raised),
    }).rowcount
    if inserted and raised and budget["webhook_url"]:
        db.execute(sql.INSERT_DELIVERY, {"owner_id": budget["owner_id"], "alert_id": alert_id,
                                         "next_attempt_us": int(now.timestamp() * 1_000_000)})
    return bool(inserted)


def raise_budget_alerts(db: Connection, owner_id: int, usage: dict[str, list[int]], now: datetime | None = None) -> int:
    """Record the alerts that newly stored usage raises; call in the write transaction that
    stored it, after its rollups. `usage` maps each config id to the instants (epoch
    microseconds) of the events just stored for it (not the duplicates). Any writer of usage
    (the events API, a re-pricing) calls this. Returns the number of alerts raised.

    Only budgets whose scope the usage touches and whose current period holds some of it are
    looked at: usage dated in an earlier period raises nothing. An owner without budgets
    costs one indexed query."""
    if not usage:
        return 0
    budgets = db.execute(sql.OWNER_BUDGETS, {"owner_id": owner_id}).fetchall()
    if not budgets:
        return 0
    now = now or utc_now()
    raised = 0
    for budget in budgets:
        scoped = usage.values() if budget["config_id"] is None else [usage.get(budget["config_id"], [])]
        period = current_period(budget["period"], budget["timezone"], now)
        lo, hi = period.start * 1_000_000, period.end * 1_000_000
        if not any(lo <= instant < hi for instants in scoped for instant in instants):
            continue
        spent = spent_micros(db, owner_id, budget, period)
        for threshold in reached(budget["amount_micros"], json.loads(budget["thresholds"]), spent):
            raised += insert_alert(db, budget, period, threshold, spent, now)
    return raised


def alerts_json(db: Connection, budget_id: str) -> list[dict]:
    """A budget's alerts, newest first, with the state of their webhook delivery."""
    result = []
    for row in db.execute(sql.BUDGET_ALERTS, {"budget_id": budget_id}):
        delivery = None
        if row["state"] is not None:
            delivery = {"state": row["state"], "attempts": row["attempts"], "lastError": row["last_error"],
                        "deliveredAt": row["delivered_at"]}
        result.append({
            "id": row["id"], "threshold": row["threshold"], "periodStart": iso_instant(row["period_start"] * 1_000_000),
            "spent": micros_to_usd(row["spent_micros"]), "crossedAt": row["crossed_at"], "delivery": delivery,
        })
    return result
