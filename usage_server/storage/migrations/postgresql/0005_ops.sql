-- Migration: retention. One row, written by the first prune: events before horizon_us
-- (UTC epoch microseconds, a UTC midnight) may have been deleted, their usage kept in the
-- rollups; an event older than the horizon is refused, since it could be a re-send of a
-- deleted one. last_pruned_on (a UTC date) lets one server process a day claim the daily
-- prune (USAGE_SERVER_KEEP_DAYS).
CREATE TABLE IF NOT EXISTS retention (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    horizon_us      BIGINT NOT NULL,
    keep_days       INTEGER NOT NULL,
    last_pruned_on  TEXT
);
