"""Storing usage events exactly once, with the rollups updated in the same transaction."""
import hashlib
import json
from dataclasses import dataclass

from . import queries
from .budgets import raise_budget_alerts
from .errors import ApiError, detail
from .money import usd_to_micros
from .pricing import NONE, SENT, ModelPricing, model_pricing
from .queries import LOCAL_GRAINS, OWNER_ROLLUP_TABLES, ROLLUP_TABLES, SLOT_PHASE, local_serves
from .retention import horizon_date, horizon_us
from .storage import Connection, Row, checkpoint, unavailable_reason, write_transaction

FINEST_GRAIN = min(ROLLUP_TABLES)


@dataclass(slots=True)
class NewEvent:
    """One validated event as sent (cost None when the client sent none). Not frozen: a
    frozen dataclass sets each field through object.__setattr__, three times the cost of
    making one, and batches and seeds make millions."""

    event_id: str
    ts_us: int
    config_id: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_micros: int | None
    execution_us: int | None
    billing_source: str
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_loaded(cls, data: dict) -> "NewEvent":
        prompt, completion = data["prompt_tokens"], data["completion_tokens"]
        execution = data["execution_time"]
        return cls(
            event_id=data["id"],
            ts_us=data["timestamp"],
            config_id=data["model_config_id"],
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion if data["total_tokens"] is None else data["total_tokens"],
            cost_micros=None if data["cost"] is None else usd_to_micros(data["cost"]),
            execution_us=None if execution is None else int((execution * 1_000_000).to_integral_value()),
            billing_source=data["billing_source"],
            cached_prompt_tokens=data.get("cached_prompt_tokens", 0),
            cache_write_tokens=data.get("cache_write_tokens", 0),
            reasoning_tokens=data.get("reasoning_tokens", 0),
        )

    def fingerprint(self) -> int:
        """A 63-bit hash of the payload, to tell a harmless re-send from a conflicting one.

        The token details join the hashed text only when one is not zero: an event without
        them keeps the fingerprint stored before they existed (and sending 0 is not sending)."""
        payload = (self.ts_us, self.config_id, self.prompt_tokens, self.completion_tokens, self.total_tokens,
                   self.cost_micros, self.execution_us, self.billing_source)
        details = (self.cached_prompt_tokens, self.cache_write_tokens, self.reasoning_tokens)
        text = repr(payload + details if any(details) else payload)
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


@dataclass
class StoreResult:
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0


def series_for(db: Connection, owner_id: int, config: Row) -> int:
    """The series of a config as it is now: model id, provider and name copied at write time."""
    params = {
        "owner_id": owner_id,
        "config_id": config["id"],
        "model_id": config["model_id"],
        "provider": config["provider"],
        "model_name": config["model_name"],
    }
    db.execute(queries.INSERT_SERIES, params)
    return db.execute(queries.SERIES_ID, params).fetchone()[0]


def store_events(db: Connection, owner_id: int, events: list[NewEvent], configs: dict[str, Row]) -> StoreResult:
    """Insert the events not seen before; call inside a write transaction.

    `configs` maps every config id the events use to its row. An id seen before (stored,
    or earlier in this batch) is skipped; if its payload differs it is also a conflict.
    """
    refuse_pruned(db, events)
    result = StoreResult()
    series = {config_id: series_for(db, owner_id, row) for config_id, row in configs.items()}
    pricing = {}  # read once per batch and config, when an event needs it

    seen = {
        row["event_id"]: row["fingerprint"]
        for row in db.execute(
            queries.STORED_FINGERPRINTS,
            {"owner_id": owner_id, "event_ids": json.dumps([event.event_id for event in events])},
        )
    }
    rows = []
    stored_at: dict[str, list[int]] = {}  # config id -> instants of the events stored now, for the budgets
    finest = {}  # (slot of the finest grain, series) -> sums; every coarser slot is a sum of these
    for event in events:
        fingerprint = event.fingerprint()
        if event.event_id in seen:
            result.duplicates += 1
            result.conflicts += seen[event.event_id] != fingerprint
            continue
        seen[event.event_id] = fingerprint
        model = None
        if event.cost_micros is None:
            model = pricing.get(event.config_id)
            if model is None:
                config = configs[event.config_id]
                model = pricing[event.config_id] = model_pricing(db, config["model_id"], config["provider"])
        stored_at.setdefault(event.config_id, []).append(event.ts_us)
        rows.append(event_row(owner_id, event, series[event.config_id], fingerprint, model, finest))
    if rows:
        db.executemany(queries.INSERT_EVENT, rows)
        add_to_rollups(db, owner_id, finest)
        raise_budget_alerts(db, owner_id, stored_at)
    result.accepted = len(rows)
    return result


def event_row(owner_id: int, event: NewEvent, series_id: int, fingerprint: int, model: ModelPricing | None,
              finest: dict) -> tuple:
    """The usage_event row of a new event, priced by `model` unless it sent its cost (then
    None), and its usage added to `finest`."""
    cost, source = event.cost_micros, SENT
    if cost is None:
        cost, source = model.price(event.ts_us, event.prompt_tokens, event.completion_tokens,
                                   event.cached_prompt_tokens, event.cache_write_tokens, event.reasoning_tokens)
    priced = int(source != NONE)
    tally(finest, event, series_id, cost, priced)
    return (owner_id, event.event_id, event.ts_us, series_id, event.prompt_tokens, event.completion_tokens,
            event.total_tokens, cost, priced, event.execution_us, event.billing_source, fingerprint, source,
            event.cached_prompt_tokens, event.cache_write_tokens, event.reasoning_tokens)


def tally(finest: dict, event: NewEvent, series_id: int, cost: int, priced: int) -> None:
    """Add a stored event to the sums of its (finest slot, series)."""
    platform = event.billing_source == "platform"
    seconds = event.ts_us // 1_000_000
    key = (seconds - seconds % FINEST_GRAIN, series_id)
    sums = finest.get(key)
    if sums is None:
        sums = finest[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0]  # the columns of queries.ROLLUP_SUMS
    sums[0] += 1
    sums[1] += 1 - priced
    sums[2 if platform else 3] += event.total_tokens
    sums[4 if platform else 5] += cost
    sums[6] += event.prompt_tokens
    sums[7] += event.cached_prompt_tokens
    sums[8] += event.reasoning_tokens


def refuse_pruned(db: Connection, events: list[NewEvent]) -> None:
    """A 400 for a batch with an event older than the retention horizon: events that old were
    deleted, so a re-sent one could not be recognised and would be counted twice."""
    horizon = horizon_us(db)
    if horizon is None:
        return
    old = [index for index, event in enumerate(events) if event.ts_us < horizon]
    if old:
        day = horizon_date(horizon).isoformat()
        message = (f"is before the retention horizon {day} (UTC): events before it are deleted, so a re-sent one "
                   "could not be told from a new one and would be counted twice")
        details = [detail(f"events.{index}.timestamp", message, "BEFORE_RETENTION_HORIZON",
                          f"send only events at or after {day}T00:00:00Z") for index in old]
        raise ApiError(400, f"events.{old[0]}.timestamp: {message}", details)


def add_to_rollups(db: Connection, owner_id: int, finest: dict) -> None:
    """Add sums per (finest slot, series) to every rollup of the owner, and bump its version."""
    rollups = coarser(finest)
    for grain, slots in rollups.items():
        db.executemany(
            queries.UPSERT_ROLLUP[grain],
            [(owner_id, slot, series_id, *sums) for (slot, series_id), sums in slots.items()],
        )
    for grain, slots in owner_rollups(rollups).items():
        db.executemany(queries.UPSERT_OWNER_ROLLUP[grain], [(owner_id, slot, *sums) for slot, sums in slots.items()])
    offsets = [row[0] for row in db.execute(queries.LOCAL_OFFSETS)]
    for key, slots in local_rollups(finest, offsets).items():
        db.executemany(queries.UPSERT_LOCAL[key], [(owner_id, *slot, *sums) for slot, sums in slots.items()])
    db.execute(queries.BUMP_OWNER_VERSION, {"owner_id": owner_id})


def store_seeded_events(db: Connection, owner_id: int, events, configs: dict[str, Row], seen: set[str] | None = None,
                        chunk: int = 50_000) -> int:
    """The bulk form of store_events for generated usage (`usage-server seed`, benchmarks):
    any number of events, inserted in chunks; then every rollup gets their sums, added up
    as store_events does (a dict per finest slot: a few thousand rows, where a GROUP BY per
    rollup table over the new events cost several times more). Ids the owner holds already
    are skipped (not compared: a seed run again sends the same events). Call inside a write
    transaction; returns how many were stored."""
    series = {config_id: series_for(db, owner_id, row) for config_id, row in configs.items()}
    pricing = {config_id: model_pricing(db, row["model_id"], row["provider"]) for config_id, row in configs.items()}
    if seen is None:  # the ids the owner holds; a caller storing in steps passes its set, kept up to date
        seen = {row[0] for row in db.execute(queries.OWNER_EVENT_IDS, {"owner_id": owner_id})}
    rows, stored, finest = [], 0, {}
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        rows.append(event_row(owner_id, event, series[event.config_id], event.fingerprint(), pricing[event.config_id],
                              finest))
        if len(rows) == chunk:
            db.executemany(queries.INSERT_EVENT, rows)
            stored, rows = stored + len(rows), []
    if rows:
        db.executemany(queries.INSERT_EVENT, rows)
        stored += len(rows)
    if stored:
        add_to_rollups(db, owner_id, finest)
    return stored


def coarser(finest: dict) -> dict[int, dict]:
    """The sums of every rollup grain, from those of the finest: each grain's from the next
    finer one's (quarter hours nest in hours, hours in days, days in weeks from Monday)."""
    rollups = {FINEST_GRAIN: finest}
    finer = finest
    for grain in sorted(ROLLUP_TABLES)[1:]:
        slots, phase = rollups.setdefault(grain, {}), SLOT_PHASE[grain]
        for (slot, series_id), sums in finer.items():
            key = (slot - (slot + phase) % grain, series_id)
            total = slots.get(key)
            slots[key] = sums if total is None else [a + b for a, b in zip(total, sums)]  # never added to in place
        finer = slots
    return rollups


def owner_rollups(rollups: dict[int, dict]) -> dict[int, dict]:
    """The sums per slot over all series, at the grains with an owner rollup."""
    owners = {}
    for grain in OWNER_ROLLUP_TABLES:
        slots = owners[grain] = {}
        for (slot, _series_id), sums in rollups[grain].items():
            total = slots.get(slot)
            slots[slot] = sums if total is None else [a + b for a, b in zip(total, sums)]  # never added to in place
    return owners


def local_rollups(finest: dict, offsets: list[int]) -> dict[str, dict]:
    """Per local grain, the sums per (offset, local slot, series) at the offsets it serves: the
    finest slots nest in local hours (the offsets are multiples of the finest grain), local
    hours in local days, local days in local weeks."""
    slots = {(offset, slot, series_id): sums for (slot, series_id), sums in finest.items() for offset in offsets}
    rollups = {}
    for key in reversed(LOCAL_GRAINS):  # finest first
        grain, phase = LOCAL_GRAINS[key]
        parts = {}
        for (offset, slot, series_id), sums in slots.items():
            parts.setdefault((offset, slot - (slot + offset + phase) % grain, series_id), []).append(sums)
        slots = {slot: [sum(column) for column in zip(*rows)] for slot, rows in parts.items()}
        rollups[key] = {slot: sums for slot, sums in slots.items() if local_serves(key, slot[0])}
    return rollups


def rebuild_rollups(db: Connection) -> None:
    """Recompute every rollup; call inside a write transaction. The quarter hours come from
    the events, every coarser rollup (series, owner, local) is summed from the quarter hours.

    Past a retention horizon (events before it pruned), only the quarter hours from the
    horizon on are recomputed from the events and the older ones kept: pruned usage is
    never wiped.
    """
    horizon = horizon_us(db)
    if horizon is None:
        db.execute(queries.CLEAR_ROLLUP[FINEST_GRAIN])
        db.execute(queries.REBUILD_QUARTERS, {"grain": FINEST_GRAIN, "phase": 0})
    else:  # a UTC midnight: a quarter-hour boundary
        db.execute(queries.CLEAR_QUARTERS_SINCE, {"horizon": horizon // 1_000_000})
        db.execute(queries.REBUILD_QUARTERS_SINCE, {"grain": FINEST_GRAIN, "phase": 0, "horizon_us": horizon})
    for grain in ROLLUP_TABLES:
        if grain != FINEST_GRAIN:
            db.execute(queries.CLEAR_ROLLUP[grain])
            db.execute(queries.ROLLUP_FROM_QUARTERS[grain], {"grain": grain, "phase": SLOT_PHASE[grain]})
    for grain in OWNER_ROLLUP_TABLES:
        db.execute(queries.CLEAR_OWNER_ROLLUP[grain])
        db.execute(queries.REBUILD_OWNER_ROLLUP[grain])
    offsets = [row[0] for row in db.execute(queries.LOCAL_OFFSETS)]
    for key, (grain, phase) in LOCAL_GRAINS.items():
        db.execute(queries.CLEAR_LOCAL[key])
        for offset in offsets:
            if local_serves(key, offset):
                db.execute(queries.BUILD_LOCAL[key], {"utc_offset": offset, "grain": grain, "phase": phase})


DAY, WEEK = 86_400, 604_800


def rebuild_rollups_in_steps(db: Connection) -> int:
    """rebuild_rollups in short transactions, for the command line beside a serving server:
    per owner, one UTC day at a time (its quarter hours from the events, its hours and day
    from those), each week once its days are done, then its local rollups; a checkpoint
    after each step. Past a retention horizon the quarter hours before it are kept. Returns
    the number of steps (transactions)."""
    horizon = horizon_us(db)
    kept_before = None if horizon is None else horizon // 1_000_000
    offsets = [row[0] for row in db.execute(queries.LOCAL_OFFSETS)]
    steps = 0

    def step(statements) -> None:
        nonlocal steps
        with write_transaction(db):
            for statement, params in statements:
                db.execute(statement, params)
            db.execute(queries.BUMP_OWNER_VERSION, {"owner_id": owner_id})  # no client keeps a stale ETag
        checkpoint(db)
        steps += 1

    for (owner_id,) in db.execute(queries.ALL_OWNER_IDS).fetchall():
        first, last = db.execute(queries.OWNER_SPAN, {"owner_id": owner_id}).fetchone()
        if first is None:
            continue
        week = first - (first + SLOT_PHASE[WEEK]) % WEEK
        while week <= last:
            for day in range(week, week + WEEK, DAY):
                owned = {"owner_id": owner_id, "lo": day, "hi": day + DAY}
                since = day if kept_before is None else max(day, kept_before)
                step([(queries.CLEAR_OWNER_RANGE[FINEST_GRAIN], {**owned, "lo": since}),
                      (queries.REBUILD_OWNER_QUARTERS, {**owned, "since": since, "grain": FINEST_GRAIN, "phase": 0})]
                     + [(statement[grain], {**owned, "grain": grain, "phase": SLOT_PHASE[grain]})
                        for grain in sorted(ROLLUP_TABLES) if FINEST_GRAIN < grain < WEEK
                        for statement in (queries.CLEAR_OWNER_RANGE, queries.OWNER_RANGE_FROM_QUARTERS)]
                     + [(statement[grain], owned) for grain in sorted(OWNER_ROLLUP_TABLES) if grain < WEEK
                        for statement in (queries.CLEAR_OWNER_TOTALS_RANGE, queries.OWNER_TOTALS_FROM_SERIES)])
            owned = {"owner_id": owner_id, "lo": week, "hi": week + WEEK, "grain": WEEK, "phase": SLOT_PHASE[WEEK]}
            step([(queries.CLEAR_OWNER_RANGE[WEEK], owned), (queries.OWNER_RANGE_FROM_QUARTERS[WEEK], owned),
                  (queries.CLEAR_OWNER_TOTALS_RANGE[WEEK], owned), (queries.OWNER_TOTALS_FROM_SERIES[WEEK], owned)])
            week += WEEK
        step([(queries.CLEAR_OWNER_LOCAL[key], {"owner_id": owner_id}) for key in LOCAL_GRAINS]
             + [(queries.BUILD_OWNER_LOCAL[key], {"owner_id": owner_id, "utc_offset": offset, "grain": grain,
                                                  "phase": phase})
                for key, (grain, phase) in LOCAL_GRAINS.items() for offset in offsets if local_serves(key, offset)])
    return steps


def register_local_offsets(db: Connection, wanted: set[int]) -> None:
    """Maintain the local rollups at exactly the `wanted` offsets: drop the others, build
    new ones from the quarter hours. Idempotent, so the workers of a server may all run it at start;
    a read-only database keeps what it has (reports read the offsets it lists)."""
    def registered() -> set[int]:
        return {row[0] for row in db.execute(queries.LOCAL_OFFSETS)}

    if registered() == wanted:
        return
    try:
        with write_transaction(db):
            have = registered()
            for offset in sorted(have - wanted):
                db.execute(queries.DELETE_LOCAL_OFFSET, {"utc_offset": offset})
                for key in LOCAL_GRAINS:
                    db.execute(queries.DELETE_LOCAL[key], {"utc_offset": offset})
            for offset in sorted(wanted - have):
                db.execute(queries.INSERT_LOCAL_OFFSET, {"utc_offset": offset})
                for key, (grain, phase) in LOCAL_GRAINS.items():
                    if local_serves(key, offset):
                        db.execute(queries.BUILD_LOCAL[key], {"utc_offset": offset, "grain": grain, "phase": phase})
    except Exception as exc:
        if unavailable_reason(exc) != "read_only":
            raise
