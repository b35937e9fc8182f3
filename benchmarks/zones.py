"""Zone-aware queries beside UTC on the same data, without and with FAST_TIMEZONES.

    python -m benchmarks --zones                 # 1M events, 365 days
    python -m benchmarks --zones --size 3000     # any size; --smoke is a tiny run

One seeded database. First without local days: UTC and every zone timed in the same
rounds, round-robin, so a noisy neighbour slows all alike. Then the server starts with
FAST_TIMEZONES (its start-up builds the local rollups from the quarter hours, timed) and the
same rounds run again; every answer must equal the first phase's. Ingestion of
1,000-event batches (in-process, one durable transaction each) is timed in both phases.
"""
import json
import statistics
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from seed.generator import ensure_configs, generate
from usage_server import create_app, queries
from usage_server.auth import now_iso
from usage_server.storage import connect, write_transaction
from usage_server.ingest import store_events

from . import dataset
from .latency import WsgiClient, new_key

ZONES = ("America/Los_Angeles", "Asia/Kolkata", "Asia/Kathmandu")
TARGET = 1.5  # a zone's median over UTC's
INGEST_OWNER = "ingest-zones"
BATCH = 1_000


def case_params(today) -> dict[str, dict]:
    return {
        "last_30_days/day": {"period": "last_30_days", "granularity": "day"},
        "current_year/week": {"period": "current_year", "granularity": "week"},
        "365 days/day": {"startDate": (today - timedelta(days=364)).isoformat(), "endDate": today.isoformat(),
                         "granularity": "day"},
        "last_7_days/hour": {"period": "last_7_days", "granularity": "hour"},
    }


def urls(today) -> dict[tuple[str, str], str]:
    return {(name, zone): "/v1/model-usage?" + urlencode({**params, "timezone": zone})
            for name, params in case_params(today).items() for zone in ("UTC", *ZONES)}


def timed_rounds(client: WsgiClient, targets: dict, rounds: int) -> tuple[dict, dict]:
    """Median ms per target over `rounds` round-robin rounds, and each target's answer."""
    answers = {}
    for key, url in targets.items():  # warm-up, and the answers
        status, body = client.get(url)
        assert status == 200, (url, status)
        answers[key] = json.loads(body)
    samples = {key: [] for key in targets}
    for _ in range(rounds):
        for key, url in targets.items():
            samples[key].append(client.timed(url))
    return {key: statistics.median(values) * 1000 for key, values in samples.items()}, answers


def ingestion_rate(path: str, runs: int, batches: int, first_seed: int) -> float:
    """Median events/s of `runs` runs of `batches` 1,000-event batches of recent traffic."""
    conn = connect(create_app({"DATABASE": path}).config)
    with write_transaction(conn):
        conn.execute(queries.INSERT_OWNER, {"name": INGEST_OWNER, "created_at": now_iso()})
        owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": INGEST_OWNER}).fetchone()[0]
        configs = ensure_configs(conn, owner_id)
    rates = []
    for run in range(runs):
        events = list(generate(BATCH * batches, 2, first_seed + run, int(time.time()), id_prefix=f"z{first_seed + run}"))
        started = time.perf_counter()
        for first in range(0, len(events), BATCH):
            with write_transaction(conn):
                store_events(conn, owner_id, events[first:first + BATCH], configs)
        rates.append(len(events) / (time.perf_counter() - started))
    conn.close()
    return statistics.median(rates)


def run(path: str, data: dataset.Dataset, args) -> list[str]:
    today = datetime.now(timezone.utc).date()
    targets = urls(today)
    key = new_key(path, data.heaviest)
    phases, answers, ingest = {}, {}, {}
    plain = WsgiClient(create_app({"DATABASE": path}), key)
    phases["without"], answers["without"] = timed_rounds(plain, targets, args.rounds)
    ingest["without"] = ingestion_rate(path, args.ingest_runs, args.ingest_batches, 100)
    started = time.perf_counter()
    fast_app = create_app({"DATABASE": path, "FAST_TIMEZONES": ",".join(ZONES)})
    build_seconds = time.perf_counter() - started
    conn = connect(fast_app.config)
    offsets = [row[0] for row in conn.execute(queries.LOCAL_OFFSETS)]
    local_rows = sum(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in queries.LOCAL_TABLES.values())
    quarter_rows = conn.execute("SELECT COUNT(*) FROM rollup_quarter").fetchone()[0]
    conn.close()
    phases["with"], answers["with"] = timed_rounds(WsgiClient(fast_app, key), targets, args.rounds)
    ingest["with"] = ingestion_rate(path, args.ingest_runs, args.ingest_batches, 200)
    same = {target: answers["with"][target] == answers["without"][target] for target in targets}
    return table(data, phases, same, ingest, offsets, build_seconds, local_rows, quarter_rows, args.rounds)


def table(data, phases, same, ingest, offsets, build_seconds, local_rows, quarter_rows, rounds) -> list[str]:
    lines = [
        f"## Time zones beside UTC: {data.events:,} events, heaviest owner {data.heaviest_events:,} events",
        "",
        f"Medians of {rounds} round-robin rounds through the WSGI app, ms; × UTC is the zone's median over "
        "UTC's in the same rounds.",
        "",
        "| query | zone | without: ms | × UTC | FAST_TIMEZONES: ms | × UTC | same answer |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    worst = 0.0
    for name in case_params(datetime.now(timezone.utc).date()):
        for zone in ("UTC", *ZONES):
            before, after = phases["without"][name, zone], phases["with"][name, zone]
            ratio_before, ratio_after = before / phases["without"][name, "UTC"], after / phases["with"][name, "UTC"]
            worst = max(worst, ratio_after)
            lines.append(f"| {name} | {zone} | {before:.2f} | {ratio_before:.2f}× | {after:.2f} | {ratio_after:.2f}× "
                         f"| {'yes' if same[name, zone] else 'NO'} |")
    lines += [
        "",
        f"- FAST_TIMEZONES={','.join(ZONES)}: offsets {', '.join(f'{offset:+d}' for offset in offsets)} s; "
        f"start-up built {local_rows:,} local week, day and hour rows from {quarter_rows:,} quarter-hour rows in {build_seconds:.2f} s",
        f"- ingestion in-process, 1,000-event batches, synchronous=FULL: without local days "
        f"{ingest['without']:,.0f} events/s, with {len(offsets)} offsets {ingest['with']:,.0f} events/s "
        f"({ingest['with'] / ingest['without']:.2f}×)",
        f"- target: every zone within {TARGET}× of UTC with FAST_TIMEZONES: highest {worst:.2f}× "
        f"({'met' if worst <= TARGET else 'missed'})",
    ]
    return lines
