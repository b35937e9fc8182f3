"""Storing usage events exactly once, with the rollups updated in the same transaction."""
import hashlib
import json
from dataclasses import dataclass

from . import queries
from .money import priced_cost, usd_to_micros
from .queries import LOCAL_GRAINS, ROLLUP_TABLES, SLOT_PHASE, local_serves
from .storage import Connection, Row, unavailable_reason, write_transaction

FINEST_GRAIN = min(ROLLUP_TABLES)


@dataclass(frozen=True)
class NewEvent:
    """One validated event as sent (cost None when the client sent none)."""

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
    result = StoreResult()
    series = {config_id: series_for(db, owner_id, row) for config_id, row in configs.items()}
    prices = {}
    for row in configs.values():
        model = db.execute(queries.MODEL_BY_ID, {"model_id": row["model_id"]}).fetchone()
        if model and model["prompt_micros_per_mtok"] is not None and model["completion_micros_per_mtok"] is not None:
            prices[row["id"]] = (model["prompt_micros_per_mtok"], model["completion_micros_per_mtok"])

    seen = {
        row["event_id"]: row["fingerprint"]
        for row in db.execute(
            queries.STORED_FINGERPRINTS,
            {"owner_id": owner_id, "event_ids": json.dumps([event.event_id for event in events])},
        )
    }
    rows = []
    finest = {}  # (slot of the finest grain, series) -> sums; every coarser slot is a sum of these
    for event in events:
        fingerprint = event.fingerprint()
        if event.event_id in seen:
            result.duplicates += 1
            result.conflicts += seen[event.event_id] != fingerprint
            continue
        seen[event.event_id] = fingerprint
        cost, priced = event.cost_micros, 1
        if cost is None:
            price = prices.get(event.config_id)
            cost, priced = (priced_cost(event.prompt_tokens, event.completion_tokens, *price), 1) if price else (0, 0)
        series_id = series[event.config_id]
        rows.append((owner_id, event.event_id, event.ts_us, series_id, event.prompt_tokens, event.completion_tokens,
                     event.total_tokens, cost, priced, event.execution_us, event.billing_source, fingerprint,
                     event.cached_prompt_tokens, event.cache_write_tokens, event.reasoning_tokens))
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
    if rows:
        db.executemany(queries.INSERT_EVENT, rows)
        for grain, slots in coarser(finest).items():
            db.executemany(
                queries.UPSERT_ROLLUP[grain],
                [(owner_id, slot, series_id, *sums) for (slot, series_id), sums in slots.items()],
            )
        offsets = [row[0] for row in db.execute(queries.LOCAL_OFFSETS)]
        for key, slots in local_rollups(finest, offsets).items():
            db.executemany(queries.UPSERT_LOCAL[key], [(owner_id, *slot, *sums) for slot, sums in slots.items()])
        db.execute(queries.BUMP_OWNER_VERSION, {"owner_id": owner_id})
    result.accepted = len(rows)
    return result


def coarser(finest: dict) -> dict[int, dict]:
    """The sums of every rollup grain, from those of the finest (its slots nest in all others)."""
    rollups = {FINEST_GRAIN: finest}
    for grain in ROLLUP_TABLES:
        if grain == FINEST_GRAIN:
            continue
        slots, phase = rollups.setdefault(grain, {}), SLOT_PHASE[grain]
        for (slot, series_id), sums in finest.items():
            key = (slot - (slot + phase) % grain, series_id)
            total = slots.get(key)
            slots[key] = sums if total is None else [a + b for a, b in zip(total, sums)]  # never added to in place
    return rollups


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
    """Recompute every rollup from the events; call inside a write transaction."""
    for grain in ROLLUP_TABLES:
        db.execute(queries.CLEAR_ROLLUP[grain])
        db.execute(queries.REBUILD_ROLLUP[grain], {"grain": grain, "phase": SLOT_PHASE[grain]})
    offsets = [row[0] for row in db.execute(queries.LOCAL_OFFSETS)]
    for key, (grain, phase) in LOCAL_GRAINS.items():
        served = json.dumps([offset for offset in offsets if local_serves(key, offset)])
        db.execute(queries.CLEAR_LOCAL[key])
        db.execute(queries.REBUILD_LOCAL[key], {"grain": grain, "phase": phase, "offsets": served})


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
