"""Every SQL statement of the server, as SQL. Values are always bound parameters.

Rollup statements exist once per rollup table: the table names come from the fixed
ROLLUP_TABLES tuple below, never from a request.
"""

ROLLUP_TABLES = {604_800: "rollup_week", 86_400: "rollup_day", 3_600: "rollup_hour", 900: "rollup_quarter"}
# A slot starts where (epoch second + phase) % grain == 0: weeks start on Mondays
# (1970-01-01 was a Thursday), the other grains at multiples of themselves.
SLOT_PHASE = {604_800: 259_200, 86_400: 0, 3_600: 0, 900: 0}
# Local rollups (FAST_TIMEZONES), keyed beside the grains: local weeks (from Monday),
# local days and local hours at each UTC offset listed in rollup_offset; a slot starts where
# (epoch second + offset + phase) % grain == 0. Coarsest first.
LOCAL_HOUR, LOCAL_DAY, LOCAL_WEEK = "local_hour", "local_day", "local_week"
LOCAL_TABLES = {LOCAL_WEEK: "rollup_local_week", LOCAL_DAY: "rollup_local_day", LOCAL_HOUR: "rollup_local_hour"}
LOCAL_GRAINS = {LOCAL_WEEK: (604_800, 259_200), LOCAL_DAY: (86_400, 0), LOCAL_HOUR: (3_600, 0)}  # (grain, phase)
# Owner rollups: the series rollups of the same grain summed over all series, for time series
# without a configuration filter (one row per slot, not one per slot and series).
OWNER_ROLLUP_TABLES = {604_800: "rollup_owner_week", 86_400: "rollup_owner_day", 3_600: "rollup_owner_hour"}


def local_serves(key: str, offset: int) -> bool:
    """Whether a local rollup holds rows at `offset`: local hours only where UTC hours do not
    fall on local hours (offsets that are not whole hours); rollup_hour serves the others."""
    return key != LOCAL_HOUR or offset % 3_600 != 0

# --- owners and keys ------------------------------------------------------------

INSERT_OWNER = """
INSERT INTO owner (name, created_at)
VALUES (:name, :created_at)
ON CONFLICT (name) DO NOTHING
"""

OWNER_ID_BY_NAME = """
SELECT id
FROM owner
WHERE name = :name
"""

INSERT_KEY = """
INSERT INTO api_key (id, owner_id, name, key_hash, scopes, created_at)
VALUES (:id, :owner_id, :name, :key_hash, :scopes, :created_at)
"""

KEY_BY_HASH = """
SELECT api_key.id, api_key.owner_id, api_key.key_hash, api_key.scopes, owner.name AS owner_name
FROM api_key
JOIN owner ON owner.id = api_key.owner_id
WHERE api_key.key_hash = :key_hash
  AND api_key.revoked_at IS NULL
"""

LIST_KEYS = """
SELECT api_key.id, owner.name AS owner, api_key.name, api_key.scopes,
       api_key.created_at, api_key.revoked_at
FROM api_key
JOIN owner ON owner.id = api_key.owner_id
WHERE :owner IS NULL OR owner.name = :owner
ORDER BY api_key.rowid
"""

REVOKE_KEY = """
UPDATE api_key
SET revoked_at = :revoked_at
WHERE (id = :id OR key_hash = :key_hash)
  AND revoked_at IS NULL
"""

KEY_EXISTS = """
SELECT 1
FROM api_key
WHERE id = :id OR key_hash = :key_hash
"""

# --- model catalogue --------------------------------------------------------------

UPSERT_MODEL = """
INSERT INTO model (model_id, provider, display_name, prompt_micros_per_mtok, completion_micros_per_mtok,
                   cache_read_micros_per_mtok, cache_write_micros_per_mtok)
VALUES (:model_id, :provider, :display_name, :prompt_price, :completion_price, :cache_read_price, :cache_write_price)
ON CONFLICT (model_id) DO UPDATE SET
    provider = excluded.provider,
    display_name = excluded.display_name,
    prompt_micros_per_mtok = excluded.prompt_micros_per_mtok,
    completion_micros_per_mtok = excluded.completion_micros_per_mtok,
    cache_read_micros_per_mtok = excluded.cache_read_micros_per_mtok,
    cache_write_micros_per_mtok = excluded.cache_write_micros_per_mtok
"""

MODEL_BY_ID = """
SELECT model_id, provider, display_name, prompt_micros_per_mtok, completion_micros_per_mtok,
       cache_read_micros_per_mtok, cache_write_micros_per_mtok
FROM model
WHERE model_id = :model_id
"""

# --- model configurations ----------------------------------------------------------

INSERT_CONFIG = """
INSERT INTO model_config (owner_id, id, display_name, model_id, provider, model_name,
                          provider_key_id, settings, created_at, updated_at)
VALUES (:owner_id, :id, :display_name, :model_id, :provider, :model_name,
        :provider_key_id, :settings, :created_at, :created_at)
ON CONFLICT (owner_id, id) DO NOTHING
"""

CONFIG_BY_ID = """
SELECT id, display_name, model_id, provider, model_name, provider_key_id, settings, created_at, updated_at
FROM model_config
WHERE owner_id = :owner_id
  AND id = :id
"""

LIST_CONFIGS = """
SELECT id, display_name, model_id, provider, model_name, provider_key_id, settings, created_at, updated_at
FROM model_config
WHERE owner_id = :owner_id
ORDER BY created_at, id
"""

# A config's last use: the newest event of each of its series, one index entry each.
CONFIG_USAGE = """
SELECT model_config.id, model_config.provider, model_config.model_id,
       COALESCE((SELECT SUM(rollup_day.requests)
                 FROM usage_series
                 JOIN rollup_day ON rollup_day.series_id = usage_series.id
                 WHERE usage_series.owner_id = model_config.owner_id
                   AND usage_series.config_id = model_config.id
                   AND rollup_day.owner_id = model_config.owner_id), 0) AS usage_count,
       (SELECT MAX((SELECT MAX(usage_event.ts_us)
                    FROM usage_event
                    WHERE usage_event.owner_id = usage_series.owner_id
                      AND usage_event.series_id = usage_series.id))
        FROM usage_series
        WHERE usage_series.owner_id = model_config.owner_id
          AND usage_series.config_id = model_config.id) AS last_used_us
FROM model_config
WHERE model_config.owner_id = :owner_id
ORDER BY model_config.created_at, model_config.id
"""

# --- writing usage -------------------------------------------------------------------

INSERT_SERIES = """
INSERT INTO usage_series (owner_id, config_id, model_id, provider, model_name)
VALUES (:owner_id, :config_id, :model_id, :provider, :model_name)
ON CONFLICT DO NOTHING
"""

SERIES_ID = """
SELECT id
FROM usage_series
WHERE owner_id = :owner_id
  AND config_id = :config_id
  AND model_id = :model_id
  AND provider = :provider
  AND model_name = :model_name
"""

# The owner's id through a subquery: PostgreSQL then plans one (owner, event id) index lookup
# per sent id whatever its statistics say, not a scan of all of an owner's events per batch
# (its choice for an owner that had no events at the last ANALYZE, estimated at one row).
STORED_FINGERPRINTS = """
SELECT event_id, fingerprint
FROM usage_event
WHERE owner_id = (SELECT :owner_id)
  AND event_id IN (SELECT value FROM json_each(:event_ids))
"""

OWNER_EVENT_IDS = """
SELECT event_id
FROM usage_event
WHERE owner_id = :owner_id
"""

INSERT_EVENT = """
INSERT INTO usage_event (owner_id, event_id, ts_us, series_id, prompt_tokens, completion_tokens,
                         total_tokens, cost_micros, priced, execution_us, billing_source, fingerprint, price_source,
                         cached_prompt_tokens, cache_write_tokens, reasoning_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_ADD_EXCLUDED = """
    requests = {table}.requests + excluded.requests,
    unpriced = {table}.unpriced + excluded.unpriced,
    platform_tokens = {table}.platform_tokens + excluded.platform_tokens,
    user_tokens = {table}.user_tokens + excluded.user_tokens,
    platform_cost = {table}.platform_cost + excluded.platform_cost,
    user_cost = {table}.user_cost + excluded.user_cost,
    prompt_tokens = {table}.prompt_tokens + excluded.prompt_tokens,
    cached_prompt_tokens = {table}.cached_prompt_tokens + excluded.cached_prompt_tokens,
    reasoning_tokens = {table}.reasoning_tokens + excluded.reasoning_tokens
"""

_UPSERT_ROLLUP = """
INSERT INTO {table} (owner_id, slot_start, series_id, requests, unpriced,
                     platform_tokens, user_tokens, platform_cost, user_cost,
                     prompt_tokens, cached_prompt_tokens, reasoning_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (owner_id, slot_start, series_id) DO UPDATE SET""" + _ADD_EXCLUDED
UPSERT_ROLLUP = {grain: _UPSERT_ROLLUP.format(table=table) for grain, table in ROLLUP_TABLES.items()}

_UPSERT_OWNER_ROLLUP = """
INSERT INTO {table} (owner_id, slot_start, requests, unpriced,
                     platform_tokens, user_tokens, platform_cost, user_cost,
                     prompt_tokens, cached_prompt_tokens, reasoning_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (owner_id, slot_start) DO UPDATE SET""" + _ADD_EXCLUDED
UPSERT_OWNER_ROLLUP = {grain: _UPSERT_OWNER_ROLLUP.format(table=table) for grain, table in OWNER_ROLLUP_TABLES.items()}

LOCAL_OFFSETS = """
SELECT utc_offset
FROM rollup_offset
ORDER BY utc_offset
"""

_UPSERT_LOCAL = """
INSERT INTO {table} (owner_id, utc_offset, slot_start, series_id, requests, unpriced,
                     platform_tokens, user_tokens, platform_cost, user_cost,
                     prompt_tokens, cached_prompt_tokens, reasoning_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (owner_id, utc_offset, slot_start, series_id) DO UPDATE SET""" + _ADD_EXCLUDED
UPSERT_LOCAL = {key: _UPSERT_LOCAL.format(table=table) for key, table in LOCAL_TABLES.items()}

BUMP_OWNER_VERSION = """
INSERT INTO owner_version (owner_id, version)
VALUES (:owner_id, 1)
ON CONFLICT (owner_id) DO UPDATE SET version = owner_version.version + 1
"""

BUMP_ALL_OWNER_VERSIONS = """
UPDATE owner_version
SET version = version + 1
"""

OWNER_VERSION = """
SELECT COALESCE((SELECT version FROM owner_version WHERE owner_id = :owner_id), 0)
"""

# The version for a usage answer's ETag, and the local offsets its report reads (utc_offset NULL
# on the version's row): one statement at the start of the answer's snapshot.
VERSION_AND_OFFSETS = """
SELECT COALESCE((SELECT version FROM owner_version WHERE owner_id = :owner_id), 0) AS version, NULL AS utc_offset
UNION ALL
SELECT NULL, utc_offset
FROM rollup_offset
"""

# --- rebuilding rollups from the events ---------------------------------------------------

# The sums of a usage series, over rollup slots or over raw events (also read by the reports).
_ROLLUP_SUMS = """
       SUM(requests) AS requests,
       SUM(unpriced) AS unpriced,
       SUM(platform_tokens) AS platform_tokens,
       SUM(user_tokens) AS user_tokens,
       SUM(platform_cost) AS platform_cost,
       SUM(user_cost) AS user_cost,
       SUM(prompt_tokens) AS prompt_tokens,
       SUM(cached_prompt_tokens) AS cached_prompt_tokens,
       SUM(reasoning_tokens) AS reasoning_tokens
"""

_EVENT_SUMS = """
       COUNT(*) AS requests,
       SUM(1 - priced) AS unpriced,
       SUM(CASE WHEN billing_source = 'platform' THEN total_tokens ELSE 0 END) AS platform_tokens,
       SUM(CASE WHEN billing_source = 'user' THEN total_tokens ELSE 0 END) AS user_tokens,
       SUM(CASE WHEN billing_source = 'platform' THEN cost_micros ELSE 0 END) AS platform_cost,
       SUM(CASE WHEN billing_source = 'user' THEN cost_micros ELSE 0 END) AS user_cost,
       SUM(prompt_tokens) AS prompt_tokens,
       SUM(cached_prompt_tokens) AS cached_prompt_tokens,
       SUM(reasoning_tokens) AS reasoning_tokens
"""

# Quarter hours from events; {events}: which, all (rebuilding) or some (past a retention
# horizon, one owner's range). Every coarser rollup is summed from the quarter hours.
_REBUILD_ROLLUP = """
INSERT INTO {table} (owner_id, slot_start, series_id, requests, unpriced,
                     platform_tokens, user_tokens, platform_cost, user_cost,
                     prompt_tokens, cached_prompt_tokens, reasoning_tokens)
SELECT owner_id,
       ts_us / 1000000 - (ts_us / 1000000 + :phase) % :grain AS slot_start,
       series_id,""" + _EVENT_SUMS + """FROM usage_event
WHERE {events}
GROUP BY owner_id, slot_start, series_id
"""
CLEAR_ROLLUP = {grain: f"DELETE FROM {table}" for grain, table in ROLLUP_TABLES.items()}
REBUILD_QUARTERS = _REBUILD_ROLLUP.format(table="rollup_quarter", events="1 = 1")

# Owner rollups from the series rollup of the same grain, just rebuilt.
_REBUILD_OWNER_ROLLUP = """
INSERT INTO {table} (owner_id, slot_start, requests, unpriced,
                     platform_tokens, user_tokens, platform_cost, user_cost,
                     prompt_tokens, cached_prompt_tokens, reasoning_tokens)
SELECT owner_id, slot_start,""" + _ROLLUP_SUMS + """FROM {source}
GROUP BY owner_id, slot_start
"""
CLEAR_OWNER_ROLLUP = {grain: f"DELETE FROM {table}" for grain, table in OWNER_ROLLUP_TABLES.items()}
REBUILD_OWNER_ROLLUP = {grain: _REBUILD_OWNER_ROLLUP.format(table=table, source=ROLLUP_TABLES[grain])
                        for grain, table in OWNER_ROLLUP_TABLES.items()}

# After a prune (events before :horizon_us deleted): the quarter hours from the horizon on
# are rebuilt from the events, those before it kept; every coarser slot is a sum of quarters.
CLEAR_QUARTERS_SINCE = """
DELETE FROM rollup_quarter
WHERE slot_start >= :horizon
"""
REBUILD_QUARTERS_SINCE = _REBUILD_ROLLUP.format(table="rollup_quarter", events="ts_us >= :horizon_us")
CLEAR_QUARTERS_BEFORE = """
DELETE FROM rollup_quarter
WHERE slot_start < :horizon
"""
QUARTERS_BEFORE = """
SELECT owner_id, slot_start, series_id, requests, unpriced, platform_tokens, user_tokens, platform_cost, user_cost,
       prompt_tokens, cached_prompt_tokens, reasoning_tokens
FROM rollup_quarter
WHERE slot_start < :horizon
ORDER BY owner_id, slot_start, series_id
"""
_ROLLUP_FROM_QUARTERS = """
INSERT INTO {table} (owner_id, slot_start, series_id, requests, unpriced,
                     platform_tokens, user_tokens, platform_cost, user_cost,
                     prompt_tokens, cached_prompt_tokens, reasoning_tokens)
SELECT owner_id,
       slot_start - (slot_start + :phase) % :grain AS coarse_start,
       series_id,""" + _ROLLUP_SUMS + """FROM rollup_quarter
GROUP BY owner_id, coarse_start, series_id
"""
ROLLUP_FROM_QUARTERS = {grain: _ROLLUP_FROM_QUARTERS.format(table=table) for grain, table in ROLLUP_TABLES.items()}

CLEAR_LOCAL = {key: f"DELETE FROM {table}" for key, table in LOCAL_TABLES.items()}

# Local slots, at a registered offset (when rebuilding, or registering one after data exists),
# are sums of whole quarter hours, since a quarter-hour slot never straddles a local hour or
# midnight at a multiple of 15 minutes. The local slot of an instant s at offset o starts at
# s - ((s + o + phase) mod grain), the modulo made non-negative (SQLite's % keeps the sign of
# its left side).
INSERT_LOCAL_OFFSET = """
INSERT INTO rollup_offset (utc_offset)
VALUES (:utc_offset)
"""

_BUILD_LOCAL = """
INSERT INTO {table} (owner_id, utc_offset, slot_start, series_id, requests, unpriced,
                     platform_tokens, user_tokens, platform_cost, user_cost,
                     prompt_tokens, cached_prompt_tokens, reasoning_tokens)
SELECT owner_id,
       :utc_offset,
       slot_start - ((slot_start + :utc_offset + :phase) % :grain + :grain) % :grain AS local_start,
       series_id,""" + _ROLLUP_SUMS + """
FROM rollup_quarter
GROUP BY owner_id, local_start, series_id
"""
BUILD_LOCAL = {key: _BUILD_LOCAL.format(table=table) for key, table in LOCAL_TABLES.items()}

DELETE_LOCAL_OFFSET = """
DELETE FROM rollup_offset
WHERE utc_offset = :utc_offset
"""
DELETE_LOCAL = {key: f"DELETE FROM {table} WHERE utc_offset = :utc_offset" for key, table in LOCAL_TABLES.items()}

# rebuild-rollups in steps: one owner's UTC day [:lo, :hi) at a time, then its UTC week: the
# quarter hours from :since on from the events, every coarser slot from the quarter hours.
_OWNER_RANGE = """
WHERE owner_id = :owner_id
  AND slot_start >= :lo
  AND slot_start < :hi
"""
CLEAR_OWNER_RANGE = {grain: f"DELETE FROM {table}" + _OWNER_RANGE for grain, table in ROLLUP_TABLES.items()}
REBUILD_OWNER_QUARTERS = _REBUILD_ROLLUP.format(table="rollup_quarter", events="""\
(owner_id, series_id) IN (SELECT owner_id, id FROM usage_series WHERE owner_id = :owner_id)
  AND ts_us >= :since * 1000000
  AND ts_us < :hi * 1000000""")
OWNER_RANGE_FROM_QUARTERS = {grain: _ROLLUP_FROM_QUARTERS.format(table=table).replace(
    "FROM rollup_quarter\n", "FROM rollup_quarter" + _OWNER_RANGE) for grain, table in ROLLUP_TABLES.items()}
# The owner rollups (no series) of one owner's range, from its series rollups just rebuilt.
CLEAR_OWNER_TOTALS_RANGE = {grain: f"DELETE FROM {table}" + _OWNER_RANGE for grain, table in OWNER_ROLLUP_TABLES.items()}
OWNER_TOTALS_FROM_SERIES = {grain: _REBUILD_OWNER_ROLLUP.format(table=table, source=ROLLUP_TABLES[grain]).replace(
    f"FROM {ROLLUP_TABLES[grain]}\n", f"FROM {ROLLUP_TABLES[grain]}" + _OWNER_RANGE) for grain, table in OWNER_ROLLUP_TABLES.items()}
CLEAR_OWNER_LOCAL = {key: f"DELETE FROM {table} WHERE owner_id = :owner_id" for key, table in LOCAL_TABLES.items()}
BUILD_OWNER_LOCAL = {key: _BUILD_LOCAL.format(table=table).replace(
    "FROM rollup_quarter\n", "FROM rollup_quarter\nWHERE owner_id = :owner_id\n") for key, table in LOCAL_TABLES.items()}
# The instants an owner's usage spans, in its events (one index entry per series) and its rollups.
OWNER_SPAN = """
SELECT MIN(first_us) / 1000000, MAX(last_us) / 1000000
FROM (SELECT (SELECT MIN(ts_us) FROM usage_event
              WHERE usage_event.owner_id = usage_series.owner_id AND usage_event.series_id = usage_series.id) AS first_us,
             (SELECT MAX(ts_us) FROM usage_event
              WHERE usage_event.owner_id = usage_series.owner_id AND usage_event.series_id = usage_series.id) AS last_us
      FROM usage_series
      WHERE owner_id = :owner_id
      UNION ALL
      SELECT MIN(slot_start) * 1000000, MAX(slot_start) * 1000000
      FROM rollup_week
      WHERE owner_id = :owner_id) AS spans
"""
ALL_OWNER_IDS = """
SELECT id
FROM owner
ORDER BY id
"""

# --- reading usage ------------------------------------------------------------------------
# Buckets: strftime(:fmt, <slot start> + :offset, 'unixepoch', :shift, :align), where the
# format and modifiers come from schemas.BUCKET_FORMATS (week: '-6 days', 'weekday 1').

_SERIES_FILTER = """
(:config_id IS NULL
 OR series_id IN (SELECT id FROM usage_series WHERE owner_id = :owner_id AND config_id = :config_id))
"""

# {rows} below: FROM and WHERE of the slots in range (_ROLLUP_RANGE or _LOCAL_RANGE).
_ROLLUP_RANGE = """
FROM {table}
WHERE owner_id = :owner_id
  AND slot_start >= :lo
  AND slot_start < :hi
  AND """ + _SERIES_FILTER

_ROLLUP_SERIES_TOTALS = """
SELECT series_id,""" + _ROLLUP_SUMS + _ROLLUP_RANGE + """
GROUP BY series_id
"""

# Events are found by (owner, series): PostgreSQL's index leads with both (the owner first,
# to distribute by owner), SQLite's with the series. A separate `owner_id = :owner_id`
# would lead SQLite's planner to its (owner, event id) index instead.
_OWNER_EVENTS = """
(owner_id, series_id) IN (SELECT owner_id, id FROM usage_series
                          WHERE owner_id = :owner_id
                            AND (:config_id IS NULL OR config_id = :config_id))
  AND ts_us >= :lo * 1000000
  AND ts_us < :hi * 1000000
"""

EVENT_BUCKETS = """
SELECT strftime(:fmt, ts_us / 1000000 + :offset, 'unixepoch', :shift, :align) AS bucket,
       COUNT(*) AS requests,
       SUM(total_tokens) AS tokens,
       SUM(cost_micros) AS cost
FROM usage_event
WHERE """ + _OWNER_EVENTS + """
GROUP BY bucket
"""

EVENT_SERIES_TOTALS = """
SELECT series_id,""" + _EVENT_SUMS + """
FROM usage_event
WHERE """ + _OWNER_EVENTS + """
GROUP BY series_id
"""

SERIES_TOTALS = {grain: _ROLLUP_SERIES_TOTALS.format(table=table) for grain, table in ROLLUP_TABLES.items()}
SERIES_TOTALS[1] = EVENT_SERIES_TOTALS

# Buckets split by series, for the CSV export (one row per bucket and model).
_ROLLUP_BUCKET_SERIES = """
SELECT strftime(:fmt, slot_start + :offset, 'unixepoch', :shift, :align) AS bucket,
       series_id,""" + _ROLLUP_SUMS + _ROLLUP_RANGE + """
GROUP BY bucket, series_id
"""

EVENT_BUCKET_SERIES = """
SELECT strftime(:fmt, ts_us / 1000000 + :offset, 'unixepoch', :shift, :align) AS bucket,
       series_id,""" + _EVENT_SUMS + """
FROM usage_event
WHERE """ + _OWNER_EVENTS + """
GROUP BY bucket, series_id
"""

BUCKET_SERIES = {grain: _ROLLUP_BUCKET_SERIES.format(table=table) for grain, table in ROLLUP_TABLES.items()}
BUCKET_SERIES[1] = EVENT_BUCKET_SERIES

# Whole local slots at the segment's offset (:offset both selects the rows and shifts them).
_LOCAL_RANGE = """
FROM {table}
WHERE owner_id = :owner_id
  AND utc_offset = :offset
  AND slot_start >= :lo
  AND slot_start < :hi
  AND """ + _SERIES_FILTER

_LOCAL_BUCKET_SERIES = """
SELECT strftime(:fmt, slot_start + :offset, 'unixepoch', :shift, :align) AS bucket,
       series_id,""" + _ROLLUP_SUMS + _LOCAL_RANGE + """
GROUP BY bucket, series_id
"""
# Time series from rollups: the sums per slot (in primary-key order, no sort); reports.py labels
# each slot's bucket in Python, once per range, rather than strftime once per slot and request.
_SLOT_SUMS = """
SELECT slot_start,
       SUM(requests) AS requests,
       SUM(platform_tokens + user_tokens) AS tokens,
       SUM(platform_cost + user_cost) AS cost
{rows}
GROUP BY slot_start
"""
SLOT_SUMS = {grain: _SLOT_SUMS.format(rows=_ROLLUP_RANGE.format(table=table)) for grain, table in ROLLUP_TABLES.items()}

# Time series of all configurations: one owner row per slot, no series to sum.
_OWNER_SLOT_SUMS = """
SELECT slot_start,
       requests,
       platform_tokens + user_tokens AS tokens,
       platform_cost + user_cost AS cost
FROM {table}
WHERE owner_id = :owner_id
  AND slot_start >= :lo
  AND slot_start < :hi
"""
OWNER_SLOT_SUMS = {grain: _OWNER_SLOT_SUMS.format(table=table) for grain, table in OWNER_ROLLUP_TABLES.items()}

for _key, _table in LOCAL_TABLES.items():
    SLOT_SUMS[_key] = _SLOT_SUMS.format(rows=_LOCAL_RANGE.format(table=_table))
    BUCKET_SERIES[_key] = _LOCAL_BUCKET_SERIES.format(table=_table)

OWNER_SERIES = """
SELECT id, config_id, model_id, provider, model_name
FROM usage_series
WHERE owner_id = :owner_id
"""

RECENT_EVENTS = """
SELECT event_id, ts_us, prompt_tokens, completion_tokens, total_tokens,
       cost_micros, priced, execution_us, billing_source, price_source,
       cached_prompt_tokens, cache_write_tokens, reasoning_tokens
FROM usage_event
WHERE (owner_id, series_id) IN (SELECT owner_id, id FROM usage_series WHERE owner_id = :owner_id AND config_id = :config_id)
ORDER BY ts_us DESC, id DESC
LIMIT :limit
"""

# --- repricing (usage-server reprice) -------------------------------------------------------------

REPRICE_SERIES = """
SELECT usage_series.id, usage_series.owner_id, usage_series.config_id, usage_series.model_id, usage_series.provider
FROM usage_series
JOIN owner ON owner.id = usage_series.owner_id
WHERE :owner IS NULL OR owner.name = :owner
ORDER BY usage_series.owner_id, usage_series.id
"""

# A page of a series' events that carried no cost (price_source 1: sent), in (time, id) order
# from (:after_ts, :after_id) exclusive: one range of the (owner, series, time) index.
REPRICE_EVENTS = """
SELECT id, event_id, ts_us, prompt_tokens, completion_tokens, cached_prompt_tokens, cache_write_tokens, reasoning_tokens,
       cost_micros, priced, billing_source, price_source
FROM usage_event
WHERE owner_id = :owner_id
  AND series_id = :series_id
  AND ts_us >= :after_ts
  AND (ts_us, id) > (:after_ts, :after_id)
  AND price_source <> 1
ORDER BY ts_us, id
LIMIT :limit
"""

REPRICE_EVENT = """
UPDATE usage_event
SET cost_micros = ?, priced = ?, price_source = ?
WHERE owner_id = ?
  AND event_id = ?
"""

# --- operations --------------------------------------------------------------------------------

# The newest event's instant, one index entry per series (for GET /metrics).
NEWEST_EVENT = """
SELECT MAX((SELECT MAX(usage_event.ts_us)
            FROM usage_event
            WHERE usage_event.owner_id = usage_series.owner_id
              AND usage_event.series_id = usage_series.id))
FROM usage_series
"""

SCHEMA_READABLE = """
SELECT COUNT(*)
FROM owner
"""

# --- copying a database (copy-to) ---------------------------------------------------------------
# The tables copy-to copies, parents first: table -> (key width, copy order, columns). A row is
# told by its first `key width` columns on both ends. Rows are read in the key's order, keys in
# their creation order (rowid), which list-keys shows. Rollups are rebuilt, never copied.
COPIED_TABLES = {
    "owner": (1, ("id",), ("id", "name", "created_at")),
    "api_key": (1, ("rowid",), ("id", "owner_id", "name", "key_hash", "scopes", "created_at", "revoked_at")),
    "model": (1, ("model_id",), ("model_id", "provider", "display_name", "prompt_micros_per_mtok",
                                 "completion_micros_per_mtok", "cache_read_micros_per_mtok",
                                 "cache_write_micros_per_mtok")),
    "model_config": (2, ("owner_id", "id"), ("owner_id", "id", "display_name", "model_id", "provider", "model_name",
                                            "provider_key_id", "settings", "created_at", "updated_at")),
    "usage_series": (1, ("id",), ("id", "owner_id", "config_id", "model_id", "provider", "model_name")),
    "usage_event": (1, ("id",), ("id", "owner_id", "event_id", "ts_us", "series_id", "prompt_tokens",
                                 "completion_tokens", "total_tokens", "cost_micros", "priced", "execution_us",
                                 "billing_source", "fingerprint", "price_source", "cached_prompt_tokens",
                                 "cache_write_tokens", "reasoning_tokens")),
}

COPIED_TABLES.update({  # budgets, their alerts and the webhook outbox, after the rows they refer to
    "budget": (2, ("owner_id", "id"), ("owner_id", "id", "name", "amount_micros", "period", "timezone", "config_id",
                                       "thresholds", "webhook_url", "webhook_secret", "created_at")),
    "budget_alert": (2, ("owner_id", "id"), ("owner_id", "id", "budget_id", "period_start", "period_end", "threshold",
                                             "spent_micros", "crossed_at", "raised")),
    "webhook_delivery": (2, ("owner_id", "alert_id"), ("owner_id", "alert_id", "state", "attempts", "next_attempt_us",
                                                       "lease_until_us", "lease_token", "last_error", "delivered_at")),
})


def _marks(count: int) -> str:
    return ", ".join("?" * count)


COPY_COUNT, COPY_FIRST_PAGE, COPY_NEXT_PAGE, COPY_KEY_RANGE, COPY_ROWS = {}, {}, {}, {}, {}
for _table, (_width, _order, _columns) in COPIED_TABLES.items():
    _key, _listed = ", ".join(_columns[:_width]), ", ".join(_columns)
    _read = ", ".join(_columns + tuple(name for name in _order if name not in _columns))  # then the order's own
    COPY_COUNT[_table] = f"""
SELECT COUNT(*)
FROM {_table}
"""
    # Pages in copy order (keyset pagination: every page is one index range, however far in).
    COPY_FIRST_PAGE[_table] = f"""
SELECT {_read}
FROM {_table}
ORDER BY {", ".join(_order)}
LIMIT ?
"""
    COPY_NEXT_PAGE[_table] = f"""
SELECT {_read}
FROM {_table}
WHERE ({", ".join(_order)}) > ({_marks(len(_order))})
ORDER BY {", ".join(_order)}
LIMIT ?
"""
    COPY_KEY_RANGE[_table] = f"""
SELECT {_listed}
FROM {_table}
WHERE ({_key}) >= ({_marks(_width)})
  AND ({_key}) <= ({_marks(_width)})
"""
    # The source's row wins (the check found the target's rows identical, see copying.py).
    # Usage rows are never replaced (the check found them identical): any key they hit skips them.
    COPY_ROWS[_table] = f"""
INSERT INTO {_table} ({_listed})
VALUES ({_marks(len(_columns))})
""" + ("ON CONFLICT DO NOTHING" if _table in ("usage_series", "usage_event") else f"""ON CONFLICT ({_key}) DO UPDATE SET
    """ + ",\n    ".join(f"{name} = excluded.{name}" for name in _columns[_width:]))

OWNER_IDS = """
SELECT id
FROM owner
ORDER BY id
"""

SET_OWNER_VERSION = """
INSERT INTO owner_version (owner_id, version)
VALUES (:owner_id, :version)
ON CONFLICT (owner_id) DO UPDATE SET version = excluded.version
"""
