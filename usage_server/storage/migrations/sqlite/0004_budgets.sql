-- Budgets, their threshold alerts, and the outbox of webhook deliveries. Money in
-- micro-dollars; a period's bounds in UTC epoch seconds; delivery instants in epoch microseconds.

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
