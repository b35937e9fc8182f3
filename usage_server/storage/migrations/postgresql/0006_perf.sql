-- Owner rollups: the series rollups of the same grain summed over every series, one row
-- per (owner, slot). A time series without a modelConfigId filter reads one row per slot
-- instead of one per slot and series (168 rows for a week by hour, not 13 x 168).

CREATE TABLE rollup_owner_hour (
    owner_id         BIGINT NOT NULL,
    slot_start       BIGINT NOT NULL,
    requests         BIGINT NOT NULL,
    unpriced         BIGINT NOT NULL,
    platform_tokens  BIGINT NOT NULL,
    user_tokens      BIGINT NOT NULL,
    platform_cost    BIGINT NOT NULL,
    user_cost        BIGINT NOT NULL,
    prompt_tokens    BIGINT NOT NULL,
    cached_prompt_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    PRIMARY KEY (owner_id, slot_start)
);

CREATE TABLE rollup_owner_day (
    owner_id         BIGINT NOT NULL,
    slot_start       BIGINT NOT NULL,
    requests         BIGINT NOT NULL,
    unpriced         BIGINT NOT NULL,
    platform_tokens  BIGINT NOT NULL,
    user_tokens      BIGINT NOT NULL,
    platform_cost    BIGINT NOT NULL,
    user_cost        BIGINT NOT NULL,
    prompt_tokens    BIGINT NOT NULL,
    cached_prompt_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    PRIMARY KEY (owner_id, slot_start)
);

CREATE TABLE rollup_owner_week (
    owner_id         BIGINT NOT NULL,
    slot_start       BIGINT NOT NULL,
    requests         BIGINT NOT NULL,
    unpriced         BIGINT NOT NULL,
    platform_tokens  BIGINT NOT NULL,
    user_tokens      BIGINT NOT NULL,
    platform_cost    BIGINT NOT NULL,
    user_cost        BIGINT NOT NULL,
    prompt_tokens    BIGINT NOT NULL,
    cached_prompt_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    PRIMARY KEY (owner_id, slot_start)
);

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
