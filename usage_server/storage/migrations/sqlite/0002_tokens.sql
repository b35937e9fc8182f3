-- Migration 2: token details. Events keep the cached (read from the provider's prompt cache),
-- cache-write and reasoning tokens they were sent with (0 when not sent); every rollup keeps,
-- per slot and series, the prompt tokens and the cached ones (for the cache hit rate, cached ÷
-- prompt) and the reasoning tokens. Not split by billing source: no answer asks for that.
-- The events stored before hold no details (0), but their prompt tokens are summed into the
-- new rollup columns here, so that every answer of an upgraded database is right at once.
-- A slot of every rollup, local ones too, spans [slot_start, slot_start + its grain) seconds.

ALTER TABLE usage_event ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_event ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_event ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;

ALTER TABLE rollup_quarter ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_quarter ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_quarter ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
UPDATE rollup_quarter
SET prompt_tokens = COALESCE((SELECT SUM(usage_event.prompt_tokens)
                              FROM usage_event
                              WHERE usage_event.owner_id = rollup_quarter.owner_id
                                AND usage_event.series_id = rollup_quarter.series_id
                                AND usage_event.ts_us >= rollup_quarter.slot_start * 1000000
                                AND usage_event.ts_us < (rollup_quarter.slot_start + 900) * 1000000), 0);

ALTER TABLE rollup_hour ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_hour ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_hour ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
UPDATE rollup_hour
SET prompt_tokens = COALESCE((SELECT SUM(usage_event.prompt_tokens)
                              FROM usage_event
                              WHERE usage_event.owner_id = rollup_hour.owner_id
                                AND usage_event.series_id = rollup_hour.series_id
                                AND usage_event.ts_us >= rollup_hour.slot_start * 1000000
                                AND usage_event.ts_us < (rollup_hour.slot_start + 3600) * 1000000), 0);

ALTER TABLE rollup_day ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_day ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_day ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
UPDATE rollup_day
SET prompt_tokens = COALESCE((SELECT SUM(usage_event.prompt_tokens)
                              FROM usage_event
                              WHERE usage_event.owner_id = rollup_day.owner_id
                                AND usage_event.series_id = rollup_day.series_id
                                AND usage_event.ts_us >= rollup_day.slot_start * 1000000
                                AND usage_event.ts_us < (rollup_day.slot_start + 86400) * 1000000), 0);

ALTER TABLE rollup_week ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_week ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_week ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
UPDATE rollup_week
SET prompt_tokens = COALESCE((SELECT SUM(usage_event.prompt_tokens)
                              FROM usage_event
                              WHERE usage_event.owner_id = rollup_week.owner_id
                                AND usage_event.series_id = rollup_week.series_id
                                AND usage_event.ts_us >= rollup_week.slot_start * 1000000
                                AND usage_event.ts_us < (rollup_week.slot_start + 604800) * 1000000), 0);

ALTER TABLE rollup_local_hour ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_local_hour ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_local_hour ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
UPDATE rollup_local_hour
SET prompt_tokens = COALESCE((SELECT SUM(usage_event.prompt_tokens)
                              FROM usage_event
                              WHERE usage_event.owner_id = rollup_local_hour.owner_id
                                AND usage_event.series_id = rollup_local_hour.series_id
                                AND usage_event.ts_us >= rollup_local_hour.slot_start * 1000000
                                AND usage_event.ts_us < (rollup_local_hour.slot_start + 3600) * 1000000), 0);

ALTER TABLE rollup_local_day ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_local_day ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_local_day ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
UPDATE rollup_local_day
SET prompt_tokens = COALESCE((SELECT SUM(usage_event.prompt_tokens)
                              FROM usage_event
                              WHERE usage_event.owner_id = rollup_local_day.owner_id
                                AND usage_event.series_id = rollup_local_day.series_id
                                AND usage_event.ts_us >= rollup_local_day.slot_start * 1000000
                                AND usage_event.ts_us < (rollup_local_day.slot_start + 86400) * 1000000), 0);

ALTER TABLE rollup_local_week ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_local_week ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_local_week ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
UPDATE rollup_local_week
SET prompt_tokens = COALESCE((SELECT SUM(usage_event.prompt_tokens)
                              FROM usage_event
                              WHERE usage_event.owner_id = rollup_local_week.owner_id
                                AND usage_event.series_id = rollup_local_week.series_id
                                AND usage_event.ts_us >= rollup_local_week.slot_start * 1000000
                                AND usage_event.ts_us < (rollup_local_week.slot_start + 604800) * 1000000), 0);
