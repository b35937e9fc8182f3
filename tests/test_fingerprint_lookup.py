"""Finding a batch's already stored events reads them by (owner, event id), one index lookup
per sent id, even for an owner whose events came after the statistics were taken: planned
by those, PostgreSQL scanned all of the owner's events for every batch."""
import json

from seed.generator import seed_owner
from usage_server import create_app, queries
from usage_server.storage import connect


EARLY_EVENTS = """
INSERT INTO usage_event (owner_id, event_id, ts_us, series_id, prompt_tokens, completion_tokens, total_tokens,
                         cost_micros, priced, execution_us, billing_source, fingerprint)
SELECT :owner_id, 'early-' || n, n * 1000000, :series_id, 1, 1, 2, 0, 1, NULL, 'platform', n
FROM generate_series(1, :count) AS n
"""


def scans(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from scans(child)


def test_a_new_owner_s_events_are_looked_up_by_id(postgres):
    conn = connect(create_app({"TESTING": True, "DATABASE": postgres.new_schema()}).config)
    seed_owner(conn, "early", events=1, days=30, seed=1)
    early, series_id = conn.execute("SELECT owner_id, MIN(id) FROM usage_series GROUP BY owner_id").fetchone()
    conn.execute(EARLY_EVENTS, {"owner_id": early, "series_id": series_id, "count": 200_000})  # large enough to want an index
    conn.execute("ANALYZE usage_event")  # every owner so far among the most common values
    seed_owner(conn, "late", events=3_000, days=30, seed=2)
    owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": "late"}).fetchone()[0]
    sent = [f"seed2-{n:09d}" for n in range(0, 3_000, 3)] + ["never-sent"]
    params = {"owner_id": owner_id, "event_ids": json.dumps(sent)}
    assert len(conn.execute(queries.STORED_FINGERPRINTS, params).fetchall()) == 1_000
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + queries.STORED_FINGERPRINTS, params).fetchone()[0][0]["Plan"]
    (events,) = [node for node in scans(plan) if node.get("Relation Name") == "usage_event"]
    assert events["Index Name"] == "usage_event_pkey" and "event_id" in events["Index Cond"], events
    conn.close()
