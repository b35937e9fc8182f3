"""`usage-server reprice`: price again, with the prices in effect now, the stored events that
carried no cost (after `import-prices` or an upgraded catalogue).

Events are read per usage series (one model of one config) in pages of at most BATCH, each
page one write transaction: its events' costs, the rollups that hold them (every grain and
every local rollup, corrected by the difference per slot) and the owner's version (ETags)
change together, so every report stays an exact sum of its events at any moment. An event
whose cost was sent is never read, let alone changed.
"""
from dataclasses import dataclass, field

from . import queries
from .budgets import raise_budget_alerts
from .ingest import FINEST_GRAIN, add_to_rollups
from .pricing import NONE, model_pricing
from .storage import Connection, checkpoint, write_transaction

BATCH = 10_000


@dataclass
class RepriceResult:
    examined: int = 0
    changed: int = 0
    before: int = 0  # micro-dollars, of the changed events
    after: int = 0
    owners: set = field(default_factory=set)


def reprice(db: Connection, since_us: int | None = None, owner: str | None = None) -> RepriceResult:
    """Reprice the events at or after `since_us` (all when None) of `owner` (all when None)."""
    result, batch = RepriceResult(), BATCH
    for series in db.execute(queries.REPRICE_SERIES, {"owner": owner}).fetchall():
        after = (-2**63 if since_us is None else since_us, -1)
        while after is not None:
            with write_transaction(db):
                after = reprice_page(db, series, after, batch, result)
            checkpoint(db)  # a bulk writer: the log stays small and serving never waits long
    return result


def reprice_page(db: Connection, series, after: tuple[int, int], batch: int, result: RepriceResult):
    """One page of a series' events, repriced with its rollups; the (time, id) to go on from,
    None after the last page."""
    owner_id, series_id = series["owner_id"], series["id"]
    events = db.execute(queries.REPRICE_EVENTS, {"owner_id": owner_id, "series_id": series_id, "after_ts": after[0],
                                                 "after_id": after[1], "limit": batch}).fetchall()
    if not events:
        return None
    pricing = model_pricing(db, series["model_id"], series["provider"])
    updates, finest, changed_at = [], {}, []
    for event in events:
        cost, source = pricing.price(event["ts_us"], event["prompt_tokens"], event["completion_tokens"],
                                     event["cached_prompt_tokens"], event["cache_write_tokens"], event["reasoning_tokens"])
        if (cost, source) == (event["cost_micros"], event["price_source"]):
            continue
        priced = int(source != NONE)
        updates.append((cost, priced, source, owner_id, event["event_id"]))
        changed_at.append(event["ts_us"])
        seconds = event["ts_us"] // 1_000_000
        key = (seconds - seconds % FINEST_GRAIN, series_id)
        sums = finest.setdefault(key, [0] * 9)  # only the cost and unpriced sums change
        sums[1] += event["priced"] - priced  # unpriced requests
        sums[4 if event["billing_source"] == "platform" else 5] += cost - event["cost_micros"]
        result.before += event["cost_micros"]
        result.after += cost
    result.examined += len(events)
    if updates:
        db.executemany(queries.REPRICE_EVENT, updates)
        add_to_rollups(db, owner_id, finest)
        raise_budget_alerts(db, owner_id, {series["config_id"]: changed_at})  # a repricing may cross a threshold
        result.changed += len(updates)
        result.owners.add(owner_id)
    last = events[-1]
    return (last["ts_us"], last["id"]) if len(events) == batch else None
