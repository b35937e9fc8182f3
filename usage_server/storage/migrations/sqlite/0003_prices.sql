-- Migration: prices from the genai-prices catalogue, operator overrides, priceSource.
-- The model table now holds only the operator's prices (usage-server import-prices), with
-- optional cache-read and cache-write rates. Its rows that are exactly the defaults every
-- database got from the hand-kept list of earlier releases are removed, so the maintained
-- catalogue prices those models; any other row was the operator's import and stays.
-- usage_event.price_source: 0 none, 1 sent, 2 override, 3 catalogue. Earlier events:
-- unpriced ones are none; a priced one whose cost is, to the micro-dollar, what its model's
-- row gave (prompt and completion tokens times its prices, rounded half up) was priced by
-- the server (catalogue for a default row, override for an imported one); any other priced
-- event counts as sent, so a later reprice never changes it.

ALTER TABLE model ADD COLUMN cache_read_micros_per_mtok INTEGER;
ALTER TABLE model ADD COLUMN cache_write_micros_per_mtok INTEGER;

ALTER TABLE usage_event ADD COLUMN price_source INTEGER NOT NULL DEFAULT 1 CHECK (price_source IN (0, 1, 2, 3));

CREATE TEMP TABLE shipped_price AS
SELECT * FROM (VALUES
    ('gpt-4o', 'OpenAI', 'GPT-4o', 2500000, 10000000),
    ('gpt-4o-mini', 'OpenAI', 'GPT-4o mini', 150000, 600000),
    ('gpt-4.1', 'OpenAI', 'GPT-4.1', 2000000, 8000000),
    ('gpt-4.1-mini', 'OpenAI', 'GPT-4.1 mini', 400000, 1600000),
    ('o3', 'OpenAI', 'o3', 2000000, 8000000),
    ('o4-mini', 'OpenAI', 'o4-mini', 1100000, 4400000),
    ('claude-opus-4-1', 'Anthropic', 'Claude Opus 4.1', 15000000, 75000000),
    ('claude-sonnet-4-5', 'Anthropic', 'Claude Sonnet 4.5', 3000000, 15000000),
    ('claude-haiku-4-5', 'Anthropic', 'Claude Haiku 4.5', 1000000, 5000000),
    ('gemini-2.5-pro', 'Google', 'Gemini 2.5 Pro', 1250000, 10000000),
    ('gemini-2.5-flash', 'Google', 'Gemini 2.5 Flash', 300000, 2500000),
    ('mistral-large-latest', 'Mistral', 'Mistral Large', 2000000, 6000000),
    ('mistral-small-latest', 'Mistral', 'Mistral Small', 100000, 300000),
    ('llama-3.3-70b-instruct', 'Meta', 'Llama 3.3 70B Instruct', 590000, 790000),
    ('llama-3.1-8b-instruct', 'Meta', 'Llama 3.1 8B Instruct', 50000, 80000)
) AS shipped;

UPDATE usage_event SET price_source = 0 WHERE priced = 0;

UPDATE usage_event
SET price_source = CASE WHEN EXISTS (SELECT 1
                                     FROM usage_series
                                     JOIN model ON model.model_id = usage_series.model_id
                                     JOIN shipped_price ON (column1, column2, column3, column4, column5)
                                         = (model.model_id, model.provider, model.display_name,
                                            model.prompt_micros_per_mtok, model.completion_micros_per_mtok)
                                     WHERE usage_series.id = usage_event.series_id)
                        THEN 3 ELSE 2 END
WHERE priced = 1
  AND cost_micros = (SELECT (usage_event.prompt_tokens * model.prompt_micros_per_mtok
                             + usage_event.completion_tokens * model.completion_micros_per_mtok + 500000) / 1000000
                     FROM usage_series
                     JOIN model ON model.model_id = usage_series.model_id
                     WHERE usage_series.id = usage_event.series_id);

DELETE FROM model
WHERE (model_id, provider, display_name, prompt_micros_per_mtok, completion_micros_per_mtok) IN (SELECT * FROM shipped_price);

DROP TABLE shipped_price;
