"""Retention: raw events older than a horizon are deleted in short batches, while the rollups
keep their usage, so no GET /v1/model-usage answer changes. The horizon is stored in the
database (table retention), never moves back, and events older than it are refused: one could
be a re-send of a deleted event, which nothing is left to recognise."""
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from . import queries
from .storage import checkpoint, write_transaction

PRUNE_BATCH = 5_000  # events deleted per transaction: a short write lock, never a long one
DAILY_CHECK_SECONDS = 3_600  # how often a server process looks whether today's prune is done

RETENTION = """
SELECT horizon_us, keep_days, last_pruned_on
FROM retention
WHERE id = 1
"""

SET_RETENTION = """
INSERT INTO retention (id, horizon_us, keep_days, last_pruned_on)
VALUES (1, :horizon_us, :keep_days, :last_pruned_on)
ON CONFLICT (id) DO UPDATE SET horizon_us = excluded.horizon_us,
                               keep_days = excluded.keep_days,
                               last_pruned_on = excluded.last_pruned_on
"""

ALL_SERIES = """
SELECT id, owner_id
FROM usage_series
ORDER BY id
"""

# One batch of one series' old events, found through the (owner,) series and time index.
DELETE_OLD_EVENTS = """
DELETE FROM usage_event
WHERE (owner_id, event_id) IN (SELECT owner_id, event_id
                               FROM usage_event
                               WHERE (owner_id, series_id) IN (SELECT owner_id, id FROM usage_series WHERE id = :series_id)
                                 AND ts_us < :horizon_us
                               LIMIT :batch)
"""


@dataclass(frozen=True)
class Pruned:
    horizon: date  # events before this UTC midnight are gone
    deleted: int


def utc_today() -> date:
    """Today's UTC date (tests pin it)."""
    return datetime.now(timezone.utc).date()


def epoch_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()) * 1_000_000


def horizon_date(horizon_us: int) -> date:
    return datetime.fromtimestamp(horizon_us // 1_000_000, timezone.utc).date()


def horizon_us(db) -> int | None:
    """The stored horizon (UTC epoch microseconds), None when nothing was ever pruned."""
    row = db.execute(RETENTION).fetchone()
    return None if row is None else row["horizon_us"]


def prune(db, keep_days: int, today: date, daily: bool = False, batch: int = PRUNE_BATCH) -> Pruned | None:
    """Delete the events before UTC midnight `keep_days` days before `today`, batch by batch.

    The horizon is recorded first (so writes older than it are refused from then on), in a
    transaction of its own; each batch is a short transaction followed by a checkpoint, so
    serving processes wait for at most one batch. `daily`: claim today's automatic prune,
    and do nothing (None) when another process already did.
    """
    with write_transaction(db):
        row = db.execute(RETENTION).fetchone()
        if daily and row is not None and row["last_pruned_on"] == today.isoformat():
            return None
        horizon = epoch_us(today - timedelta(days=keep_days))
        if row is not None:
            horizon = max(horizon, row["horizon_us"])  # deleted events cannot come back
        db.execute(SET_RETENTION, {"horizon_us": horizon, "keep_days": keep_days,
                                   "last_pruned_on": today.isoformat() if daily else row and row["last_pruned_on"]})
    deleted = 0
    for series in db.execute(ALL_SERIES).fetchall():
        while True:
            with write_transaction(db):
                count = db.execute(DELETE_OLD_EVENTS, {"series_id": series["id"], "horizon_us": horizon,
                                                       "batch": batch}).rowcount
                if count:  # the details answers change: their ETags must too
                    db.execute(queries.BUMP_OWNER_VERSION, {"owner_id": series["owner_id"]})
            checkpoint(db)
            deleted += count
            if count < batch:
                break
    return Pruned(horizon_date(horizon), deleted)


class DailyPrune:
    """USAGE_SERVER_KEEP_DAYS: each server process looks at most once an hour, on a request,
    whether today's prune is done; the first to claim it (in a write transaction) runs it in
    a background thread, so one process a day prunes and no request waits for it."""

    def __init__(self, app):
        self.app, self.next_check, self.lock = app, 0.0, threading.Lock()

    def maybe_start(self) -> None:
        now = time.monotonic()
        if now < self.next_check or not self.lock.acquire(blocking=False):
            return
        self.next_check = now + DAILY_CHECK_SECONDS
        threading.Thread(target=self.run, name="usage-server-prune", daemon=True).start()

    def run(self) -> None:
        from .storage import connect

        try:
            db = connect(self.app.config)
            try:
                prune(db, int(self.app.config["KEEP_DAYS"]), utc_today(), daily=True)
            finally:
                db.close()
        except Exception:  # busy, or the database is gone: the next hourly look tries again
            self.app.logger.exception("the daily prune failed")
        finally:
            self.lock.release()


def init_app(app) -> None:
    """USAGE_SERVER_KEEP_DAYS (0 or unset: keep every event) starts the daily prune."""
    if app.config.get("KEEP_DAYS") in (0, None, ""):
        return
    days = app.config["KEEP_DAYS"]
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ValueError(f"KEEP_DAYS (USAGE_SERVER_KEEP_DAYS) must be a whole number of days, at least 1: "
                         f"{app.config['KEEP_DAYS']!r}")
    daily = app.extensions["usage_server.retention"] = DailyPrune(app)
    app.before_request(daily.maybe_start)
