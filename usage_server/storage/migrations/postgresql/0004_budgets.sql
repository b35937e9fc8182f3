-- Budgets, their threshold alerts, and the outbox of webhook deliveries: the tables of
-- sqlite/0004_budgets.sql in PostgreSQL's types.

CREATE TABLE budget (
    owner_id        BIGINT NOT NULL REFERENCES owner (id),
    id              TEXT COLLATE "C" NOT NULL,      -- bud_ + random
    name            TEXT NOT NULL,
    amount_micros   BIGINT NOT NULL,
    period          TEXT COLLATE "C" NOT NULL CHECK (period IN ('day', 'week', 'month')),
    timezone        TEXT COLLATE "C" NOT NULL,
    config_id       TEXT COLLATE "C",               -- NULL: all of the owner's usage
    thresholds      TEXT NOT NULL,                  -- JSON list of percents, ascending
    webhook_url     TEXT,
    webhook_secret  TEXT,                           -- for signing only, never shown again
    created_at      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (owner_id, id)
);

CREATE INDEX budget_by_owner ON budget (owner_id, created_at);

-- One row per budget, period and threshold reached: the unique key makes each exactly once.
-- `raised` = 0 marks a threshold already reached when the budget was made (no alert).
CREATE TABLE budget_alert (
    owner_id      BIGINT NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,     -- alr_ + random, stable across retries
    budget_id     TEXT COLLATE "C" NOT NULL,
    period_start  BIGINT NOT NULL,
    period_end    BIGINT NOT NULL,
    threshold     INTEGER NOT NULL,
    spent_micros  BIGINT NOT NULL,
    crossed_at    TEXT COLLATE "C" NOT NULL,
    raised        INTEGER NOT NULL,
    PRIMARY KEY (owner_id, id),
    UNIQUE (owner_id, budget_id, period_start, threshold),
    FOREIGN KEY (owner_id, budget_id) REFERENCES budget (owner_id, id) ON DELETE CASCADE
);

-- The webhook outbox: a process claims a due row by setting a lease (lease_token,
-- lease_until_us), so one process at a time delivers an alert.
CREATE TABLE webhook_delivery (
    owner_id         BIGINT NOT NULL,
    alert_id         TEXT COLLATE "C" NOT NULL,
    state            TEXT COLLATE "C" NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_us  BIGINT NOT NULL,
    lease_until_us   BIGINT NOT NULL DEFAULT 0,
    lease_token      TEXT COLLATE "C",
    last_error       TEXT,
    delivered_at     TEXT COLLATE "C",
    PRIMARY KEY (owner_id, alert_id),
    FOREIGN KEY (owner_id, alert_id) REFERENCES budget_alert (owner_id, id) ON DELETE CASCADE
);

-- No index for the poll of due deliveries: every index of owner data leads with owner_id
-- (docs/scaling.md), and the outbox holds a few rows per budget and period.
