-- usage_server schema: every table as the latest migration leaves it, to read. The server
-- builds and upgrades databases with the numbered steps in usage_server/storage/migrations/;
-- tests/test_migrations.py checks that they give exactly these tables, columns and indexes.
-- Money is stored as integer micro-dollars (1e-6 USD, the precision the API reports, so every
-- total is an exact sum of the parts it is shown with); instants as integer UTC epoch
-- seconds (rollup slots) or microseconds (events).

CREATE TABLE IF NOT EXISTS owner (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_key (
    id          TEXT PRIMARY KEY,               -- public part of the key, safe to list
    owner_id    INTEGER NOT NULL REFERENCES owner (id),
    name        TEXT NOT NULL DEFAULT '',
    key_hash    TEXT NOT NULL UNIQUE,           -- SHA-256 of the raw key, hex
    scopes      TEXT NOT NULL,                  -- comma separated: read,write
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

-- The operator's prices (usage-server import-prices), which win over the genai-prices
-- catalogue: display names and prices per million tokens, in micro-dollars.
CREATE TABLE IF NOT EXISTS model (
    model_id                 TEXT PRIMARY KEY,
    provider                 TEXT NOT NULL,
    display_name             TEXT NOT NULL,
    prompt_micros_per_mtok     INTEGER,
    completion_micros_per_mtok INTEGER,
    cache_read_micros_per_mtok INTEGER,       -- NULL: cache reads cost the prompt price
    cache_write_micros_per_mtok INTEGER       -- NULL: cache writes cost the prompt price
);

CREATE TABLE IF NOT EXISTS model_config (
    owner_id      INTEGER NOT NULL REFERENCES owner (id),
    id            TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    model_id      TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model_name    TEXT NOT NULL,
    provider_key_id TEXT,
    settings      TEXT NOT NULL DEFAULT '{}',   -- JSON object
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (owner_id, id)
) WITHOUT ROWID;

-- One row per (config, model as copied at write time): events and rollups refer to it
-- by a small integer, so history keeps the model it ran on and GROUP BY stays cheap.
CREATE TABLE IF NOT EXISTS usage_series (
    id          INTEGER PRIMARY KEY,
    owner_id    INTEGER NOT NULL REFERENCES owner (id),
    config_id   TEXT NOT NULL,
    model_id    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    model_name  TEXT NOT NULL,
    UNIQUE (owner_id, config_id, model_id, provider, model_name)
);

CREATE TABLE IF NOT EXISTS usage_event (
    id                 INTEGER PRIMARY KEY,     -- time-ordered insert key
    owner_id           INTEGER NOT NULL REFERENCES owner (id),
    event_id           TEXT NOT NULL,           -- the client's id, unique per owner
    ts_us              INTEGER NOT NULL,        -- UTC epoch microseconds
    series_id          INTEGER NOT NULL REFERENCES usage_series (id),
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    total_tokens       INTEGER NOT NULL,
    cost_micros         INTEGER NOT NULL,
    priced             INTEGER NOT NULL,        -- 0: no cost sent and no catalogue price
    execution_us       INTEGER,
    billing_source     TEXT NOT NULL CHECK (billing_source IN ('platform', 'user')),
    fingerprint        INTEGER NOT NULL,        -- hash of the payload, to report conflicts
    cached_prompt_tokens INTEGER NOT NULL DEFAULT 0, -- of prompt_tokens: read from the prompt cache
    cache_write_tokens   INTEGER NOT NULL DEFAULT 0, -- of prompt_tokens: written to the prompt cache
    reasoning_tokens     INTEGER NOT NULL DEFAULT 0, -- of completion_tokens
    price_source       INTEGER NOT NULL DEFAULT 1 CHECK (price_source IN (0, 1, 2, 3)),  -- none, sent, override, catalogue
    UNIQUE (owner_id, event_id)
);
CREATE INDEX IF NOT EXISTS usage_event_series_ts ON usage_event (series_id, ts_us);

-- Rollups: the events pre-aggregated per series and time slot, kept in the same
-- transaction as every write. Slots are UTC epoch seconds at the start of a quarter
-- hour, an hour, a UTC day or a UTC week: a quarter hour divides every UTC offset in use,
-- so any time zone's buckets are exact sums of whole slots.
CREATE TABLE IF NOT EXISTS rollup_quarter (
    owner_id         INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    series_id        INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0, -- for the cache hit rate: cached ÷ prompt
    cached_prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, slot_start, series_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rollup_hour (
    owner_id         INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    series_id        INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, slot_start, series_id)
) WITHOUT ROWID;

-- Weeks (from Monday 00:00 UTC): week buckets in UTC and totals over long ranges.
CREATE TABLE IF NOT EXISTS rollup_week (
    owner_id         INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    series_id        INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, slot_start, series_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rollup_day (
    owner_id         INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    series_id        INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, slot_start, series_id)
) WITHOUT ROWID;

-- Local days and weeks at a fixed UTC offset (FAST_TIMEZONES): slot_start is the UTC
-- instant of a local midnight (of a Monday, for weeks) at utc_offset, so day, week and
-- month buckets of a zone whose offset is not a whole number of days read one row per
-- day or week instead of 24 or 96 per day. Local hours likewise, only at offsets that
-- are not whole hours (at the others rollup_hour already holds the local hours), so
-- hour buckets there read one row per hour instead of four quarter hours.
-- rollup_offset lists the offsets maintained; an offset not listed is served by the
-- finer rollups.
CREATE TABLE IF NOT EXISTS rollup_offset (
    utc_offset  INTEGER PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS rollup_local_day (
    owner_id         INTEGER NOT NULL,
    utc_offset       INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    series_id        INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, utc_offset, slot_start, series_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rollup_local_week (
    owner_id         INTEGER NOT NULL,
    utc_offset       INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    series_id        INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, utc_offset, slot_start, series_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rollup_local_hour (
    owner_id         INTEGER NOT NULL,
    utc_offset       INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    series_id        INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, utc_offset, slot_start, series_id)
) WITHOUT ROWID;

-- Owner rollups: the series rollups of the same grain summed over every series, one row
-- per (owner, slot). A time series without a modelConfigId filter reads one row per slot
-- instead of one per slot and series (168 rows for a week by hour, not 13 x 168).

CREATE TABLE IF NOT EXISTS rollup_owner_hour (
    owner_id         INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens    INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    PRIMARY KEY (owner_id, slot_start)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rollup_owner_day (
    owner_id         INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens    INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    PRIMARY KEY (owner_id, slot_start)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rollup_owner_week (
    owner_id         INTEGER NOT NULL,
    slot_start       INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    unpriced         INTEGER NOT NULL,
    platform_tokens  INTEGER NOT NULL,
    user_tokens      INTEGER NOT NULL,
    platform_cost    INTEGER NOT NULL,
    user_cost        INTEGER NOT NULL,
    prompt_tokens    INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    PRIMARY KEY (owner_id, slot_start)
) WITHOUT ROWID;

-- Bumped on every stored batch: the usage ETag of an owner.
CREATE TABLE IF NOT EXISTS owner_version (
    owner_id  INTEGER PRIMARY KEY REFERENCES owner (id),
    version   INTEGER NOT NULL
);

-- The schema's version: one row per numbered migration applied.
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL
);

-- Budgets, their threshold alerts and the webhook outbox (migration 0004_budgets).
CREATE TABLE IF NOT EXISTS budget (
    owner_id        INTEGER NOT NULL REFERENCES owner (id),
    id              TEXT NOT NULL,                  -- bud_ + random
    name            TEXT NOT NULL,
    amount_micros   INTEGER NOT NULL,
    period          TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    timezone        TEXT NOT NULL,
    config_id       TEXT,                           -- NULL: all of the owner's usage
    thresholds      TEXT NOT NULL,                  -- JSON list of percents, ascending
    webhook_url     TEXT,
    webhook_secret  TEXT,                           -- for signing only, never shown again
    created_at      TEXT NOT NULL,
    PRIMARY KEY (owner_id, id)
);

CREATE INDEX IF NOT EXISTS budget_by_owner ON budget (owner_id, created_at);

-- One row per budget, period and threshold reached: the unique key makes each exactly once.
-- `raised` = 0 marks a threshold already reached when the budget was made (no alert).
CREATE TABLE IF NOT EXISTS budget_alert (
    owner_id      INTEGER NOT NULL,
    id            TEXT NOT NULL,               -- alr_ + random, stable across retries
    budget_id     TEXT NOT NULL,
    period_start  INTEGER NOT NULL,
    period_end    INTEGER NOT NULL,
    threshold     INTEGER NOT NULL,
    spent_micros  INTEGER NOT NULL,
    crossed_at    TEXT NOT NULL,
    raised        INTEGER NOT NULL,
    PRIMARY KEY (owner_id, id),
    UNIQUE (owner_id, budget_id, period_start, threshold),
    FOREIGN KEY (owner_id, budget_id) REFERENCES budget (owner_id, id) ON DELETE CASCADE
);

-- The webhook outbox: a process claims a due row by setting a lease (lease_token,
-- lease_until_us), so one process at a time delivers an alert.
CREATE TABLE IF NOT EXISTS webhook_delivery (
    owner_id         INTEGER NOT NULL,
    alert_id         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_us  INTEGER NOT NULL,
    lease_until_us   INTEGER NOT NULL DEFAULT 0,
    lease_token      TEXT,
    last_error       TEXT,
    delivered_at     TEXT,
    PRIMARY KEY (owner_id, alert_id),
    FOREIGN KEY (owner_id, alert_id) REFERENCES budget_alert (owner_id, id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS webhook_delivery_due ON webhook_delivery (state, next_attempt_us);
-- Retention (usage-server prune, USAGE_SERVER_KEEP_DAYS): one row once something was pruned.
-- Events before horizon_us (a UTC midnight) may be deleted, their usage kept in the rollups;
-- older events are refused. last_pruned_on: the UTC date of the last daily prune.
CREATE TABLE IF NOT EXISTS retention (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    horizon_us      INTEGER NOT NULL,
    keep_days       INTEGER NOT NULL,
    last_pruned_on  TEXT
);
