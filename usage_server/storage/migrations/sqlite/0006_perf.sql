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

-- A database that already holds usage: the new tables are the sums of the series rollups
-- (emptied first: a database from before recorded versions runs every step again).
DELETE FROM rollup_owner_hour;
INSERT INTO rollup_owner_hour (owner_id, slot_start, requests, unpriced,
                              platform_tokens, user_tokens, platform_cost, user_cost,
                              prompt_tokens, cached_prompt_tokens, reasoning_tokens)
SELECT owner_id, slot_start, SUM(requests), SUM(unpriced),
       SUM(platform_tokens), SUM(user_tokens), SUM(platform_cost), SUM(user_cost),
       SUM(prompt_tokens), SUM(cached_prompt_tokens), SUM(reasoning_tokens)
FROM rollup_hour
GROUP BY owner_id, slot_start;

DELETE FROM rollup_owner_day;
INSERT INTO rollup_owner_day (owner_id, slot_start, requests, unpriced,
                              platform_tokens, user_tokens, platform_cost, user_cost,
                              prompt_tokens, cached_prompt_tokens, reasoning_tokens)
SELECT owner_id, slot_start, SUM(requests), SUM(unpriced),
       SUM(platform_tokens), SUM(user_tokens), SUM(platform_cost), SUM(user_cost),
       SUM(prompt_tokens), SUM(cached_prompt_tokens), SUM(reasoning_tokens)
FROM rollup_day
GROUP BY owner_id, slot_start;

DELETE FROM rollup_owner_week;
INSERT INTO rollup_owner_week (owner_id, slot_start, requests, unpriced,
                              platform_tokens, user_tokens, platform_cost, user_cost,
                              prompt_tokens, cached_prompt_tokens, reasoning_tokens)
SELECT owner_id, slot_start, SUM(requests), SUM(unpriced),
       SUM(platform_tokens), SUM(user_tokens), SUM(platform_cost), SUM(user_cost),
       SUM(prompt_tokens), SUM(cached_prompt_tokens), SUM(reasoning_tokens)
FROM rollup_week
GROUP BY owner_id, slot_start;
