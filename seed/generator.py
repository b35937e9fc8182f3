"""A deterministic generator of realistic LLM usage.

Traffic follows a weekday rhythm (quiet weekends), an hour-of-day curve peaking in
the afternoon (UTC), and a growth trend over the period. Each model configuration has
its own share of traffic, token sizes, latency and billing source (platform keys or the
owner's own). One fine-tuned model has no catalogue price, so unpriced usage shows up.
"""
import itertools
import json
import math
import random
import time
from dataclasses import dataclass

from usage_server import queries
from usage_server.auth import now_iso
from usage_server.pricing import model_name
from usage_server.storage import Connection, Row, checkpoint, write_transaction
from usage_server.ingest import NewEvent, store_seeded_events

STEP = 10_000  # events per transaction: a step holds the write lock for well under a busy timeout
WEEKDAY_WEIGHT = (1.0, 1.05, 1.05, 1.0, 0.9, 0.45, 0.4)  # Monday first
HOUR_WEIGHT = tuple(0.25 + math.exp(-((hour - 15) ** 2) / 18) for hour in range(24))


@dataclass(frozen=True)
class DemoConfig:
    id: str
    display_name: str
    model_id: str
    provider: str
    share: float  # relative traffic
    prompt_median: int
    completion_median: int
    latency_base: float  # seconds before the first token
    seconds_per_token: float
    user_billed: float  # fraction of requests on the owner's own provider key


DEMO_CONFIGS = (
    DemoConfig("cfg_support_chat", "Support chat", "gpt-4o-mini", "OpenAI", 30, 900, 220, 0.35, 0.008, 0.0),
    DemoConfig("cfg_support_escalation", "Support escalation", "gpt-4o", "OpenAI", 6, 2400, 450, 0.5, 0.012, 0.0),
    DemoConfig("cfg_code_review", "Code review", "claude-sonnet-4-5", "Anthropic", 9, 6000, 900, 0.8, 0.015, 1.0),
    DemoConfig("cfg_summarizer", "Meeting summaries", "claude-haiku-4-5", "Anthropic", 12, 4000, 350, 0.4, 0.007, 0.3),
    DemoConfig("cfg_research", "Research agent", "o3", "OpenAI", 2, 8000, 2500, 2.5, 0.02, 1.0),
    DemoConfig("cfg_extraction", "Invoice extraction", "gemini-2.5-flash", "Google", 14, 3000, 300, 0.3, 0.005, 0.0),
    DemoConfig("cfg_long_docs", "Long documents", "gemini-2.5-pro", "Google", 3, 30000, 1200, 1.2, 0.011, 0.5),
    DemoConfig("cfg_translation", "Translation", "mistral-large-latest", "Mistral", 5, 1200, 1100, 0.45, 0.01, 0.0),
    DemoConfig("cfg_classifier", "Ticket classifier", "mistral-small-latest", "Mistral", 10, 600, 20, 0.15, 0.004, 0.0),
    DemoConfig("cfg_rag_answers", "Docs answers", "llama-3.3-70b-instruct", "Meta", 6, 3500, 400, 0.4, 0.009, 1.0),
    DemoConfig("cfg_autocomplete", "Autocomplete", "llama-3.1-8b-instruct", "Meta", 8, 300, 40, 0.08, 0.002, 1.0),
    DemoConfig("cfg_planner", "Planner", "o4-mini", "OpenAI", 4, 2500, 1500, 1.0, 0.01, 0.0),
    DemoConfig("cfg_tone_ft", "Brand tone (fine-tuned)", "ft:gpt-4o-mini:acme:tone", "OpenAI", 3, 700, 250, 0.4, 0.008, 0.0),
)


def ensure_configs(conn: Connection, owner_id: int) -> dict[str, Row]:
    created = now_iso()
    for config in DEMO_CONFIGS:
        conn.execute(
            queries.INSERT_CONFIG,
            {
                "owner_id": owner_id, "id": config.id, "display_name": config.display_name,
                "model_id": config.model_id, "provider": config.provider,
                "model_name": model_name(conn, config.model_id, config.provider),
                "provider_key_id": None, "settings": json.dumps({}), "created_at": created,
            },
        )
    return {
        config.id: conn.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": config.id}).fetchone()
        for config in DEMO_CONFIGS
    }


def generate(events: int, days: int, seed: int, end: int, id_prefix: str = "seed"):
    """Yield NewEvents in time order over the `days` days before the epoch second `end`."""
    rng = random.Random(seed)
    start_day = end // 86_400 - days + 1
    day_weights = [
        (1 + 1.5 * index / max(days - 1, 1)) * WEEKDAY_WEIGHT[(start_day + index + 3) % 7]  # 1970-01-01 was a Thursday
        for index in range(days)
    ]
    day_picks = rng.choices(range(days), weights=day_weights, k=events)
    hour_picks = rng.choices(range(24), weights=HOUR_WEIGHT, k=events)
    config_picks = rng.choices(DEMO_CONFIGS, weights=[c.share for c in DEMO_CONFIGS], k=events)
    instants = []
    for day, hour in zip(day_picks, hour_picks):
        instant = (start_day + day) * 86_400 + hour * 3_600 + int(rng.random() * 3_600)
        instants.append(instant if instant < end else instant - 86_400)
    order = sorted(range(events), key=instants.__getitem__)
    gauss, random_unit, exp = rng.gauss, rng.random, math.exp  # log-normal sizes: exp of a normal draw
    for number, index in enumerate(order):
        config = config_picks[index]
        prompt = max(1, int(config.prompt_median * exp(gauss(0, 0.6))))
        completion = max(1, int(config.completion_median * exp(gauss(0, 0.7))))
        latency = config.latency_base * exp(gauss(0, 0.3)) + completion * config.seconds_per_token
        yield NewEvent(
            event_id=f"{id_prefix}-{number:09d}",
            ts_us=instants[index] * 1_000_000 + int(random_unit() * 1_000) * 1_000,
            config_id=config.id,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_micros=None,
            execution_us=int(latency * 1_000_000),
            billing_source="user" if random_unit() < config.user_billed else "platform",
        )


def seed_owner(conn: Connection, owner: str, events: int, days: int, seed: int, end: int | None = None,
               step: int = STEP) -> int:
    """Create `owner` with the demo configs and store `events` events, `step` per transaction.

    Each step is a short transaction followed by a checkpoint, so a server on the same
    database keeps answering (its writers wait for one step at most) and the log stays
    small; a seed cut short keeps the steps it committed, and seeding again adds the rest.
    """
    end = int(time.time()) if end is None else end
    with write_transaction(conn):
        conn.execute(queries.INSERT_OWNER, {"name": owner, "created_at": now_iso()})
        owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": owner}).fetchone()[0]
        configs = ensure_configs(conn, owner_id)
        seen = {row[0] for row in conn.execute(queries.OWNER_EVENT_IDS, {"owner_id": owner_id})}
    stored = 0
    generated = generate(events, days, seed, end, id_prefix=f"seed{seed}")
    while chunk := list(itertools.islice(generated, step)):
        with write_transaction(conn):
            stored += store_seeded_events(conn, owner_id, chunk, configs, seen)
        checkpoint(conn)
    return stored
