"""OTLP ingestion over HTTP beside the events endpoint: spans/s of POST /v1/traces with
1,000-span protobuf exports, and events/s of POST /v1/model-usage/events carrying the same
usage, in the same run against the same gunicorn (2 workers) and database.

    python -m benchmarks.ingest_otlp [--runs 5] [--batches 10] [--workers 2] [--smoke]

Each run times the events batches, then the same usage as OTLP exports (alternating, so a
busy moment of the machine falls on both); bodies are encoded before the clock starts. Two
owners receive the usage, one through each endpoint; at the end their GET /v1/model-usage
answers must be equal. Prints each run, the medians and OTLP's rate over the events'.
"""
import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

from .ingest_http import CONFIGS, create_configs, gunicorn

BATCH = 1000
TARGET_RATIO = 0.5  # OTLP spans/s over events/s


def usage_batches(count: int, seed: int) -> list[list[dict]]:
    """`count` batches of unique usage over the last 30 days (no cost: the server prices both)."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    batches = []
    for b in range(count):
        batch = []
        for n in range(BATCH):
            end = now - timedelta(seconds=rng.randrange(30 * 86_400), microseconds=rng.randrange(10**6))
            batch.append({"trace": (seed * 1_000_003 + b) % 2**64 + 1, "span": n + 1, "end": end,
                          "seconds": rng.randrange(200_000, 20_000_000) / 10**6, "config": rng.choice(list(CONFIGS)),
                          "prompt": rng.randrange(50, 8000), "completion": rng.randrange(10, 2000),
                          "source": "user" if n % 3 == 0 else "platform"})
        batches.append(batch)
    return batches


def events_body(batch: list[dict]) -> bytes:
    return json.dumps({"events": [{
        "id": f"{item['trace']:032x}:{item['span']:016x}", "timestamp": item["end"].isoformat(),
        "modelConfigId": item["config"], "promptTokens": item["prompt"], "completionTokens": item["completion"],
        "executionTime": item["seconds"], "billingSource": item["source"]} for item in batch]}).encode()


def attribute(key: str, value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value))


def otlp_body(batch: list[dict]) -> bytes:
    """The same usage as one export of spans as instrumentations send them (plus the config id)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(attribute("service.name", "bench"))
    spans = resource_spans.scope_spans.add().spans
    for item in batch:
        end_ns = int(item["end"].timestamp()) * 10**9 + item["end"].microsecond * 1000
        model, provider = CONFIGS[item["config"]]
        spans.append(Span(
            trace_id=item["trace"].to_bytes(16, "big"), span_id=item["span"].to_bytes(8, "big"),
            name=f"chat {model}", kind=Span.SPAN_KIND_CLIENT, end_time_unix_nano=end_ns,
            start_time_unix_nano=end_ns - round(item["seconds"] * 10**6) * 1000,
            attributes=[attribute("gen_ai.operation.name", "chat"), attribute("gen_ai.provider.name", provider.lower()),
                        attribute("gen_ai.request.model", model), attribute("gen_ai.response.model", model),
                        attribute("gen_ai.usage.input_tokens", item["prompt"]),
                        attribute("gen_ai.usage.output_tokens", item["completion"]),
                        attribute("usage.model_config_id", item["config"]),
                        attribute("usage.billing_source", item["source"])]))
    return request.SerializeToString()


def post_events(session, base: str, body: bytes) -> None:
    response = session.post(f"{base}/v1/model-usage/events", data=body, headers={"Content-Type": "application/json"},
                            timeout=120)
    assert response.status_code == 200 and response.json()["accepted"] == BATCH, response.text


def post_otlp(session, base: str, body: bytes) -> None:
    response = session.post(f"{base}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"},
                            timeout=120)
    assert response.status_code == 200, response.content
    assert ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == 0


def timed(post, key: str, base: str, bodies: list[bytes]) -> float:
    """Items per second for `bodies`, posted one after another."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {key}"
        started = time.perf_counter()
        for body in bodies:
            post(session, base, body)
        return len(bodies) * BATCH / (time.perf_counter() - started)


def answer(base: str, key: str) -> dict:
    response = requests.get(f"{base}/v1/model-usage?period=last_30_days", headers={"Authorization": f"Bearer {key}"},
                            timeout=120)
    response.raise_for_status()
    document = response.json()
    document["meta"].pop("startDate"), document["meta"].pop("endDate")  # the day may turn during the run
    return document


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest_otlp", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=10, help="1,000-item batches per endpoint and run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--dir", default=None, help="where the database goes (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="one run of two batches, to check that it works")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.batches = 1, 2

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        database = str(Path(folder) / "usage.sqlite")
        conn = connect(create_app({"DATABASE": database}).config)
        with write_transaction(conn):
            events_key = create_key(conn, "bench-events", ["read", "write"])[1]
            otlp_key = create_key(conn, "bench-otlp", ["read", "write"])[1]
        conn.close()
        with gunicorn(database, args.workers) as (_, base):
            for key in (events_key, otlp_key):
                create_configs(base, key)
            warm = usage_batches(1, seed=-1)  # imports, caches, first pages
            timed(post_events, events_key, base, [events_body(batch) for batch in warm])
            timed(post_otlp, otlp_key, base, [otlp_body(batch) for batch in warm])
            events_rates, otlp_rates = [], []
            for run in range(args.runs):
                batches = usage_batches(args.batches, seed=run)
                events_bodies, otlp_bodies = [events_body(b) for b in batches], [otlp_body(b) for b in batches]
                events_rates.append(timed(post_events, events_key, base, events_bodies))
                otlp_rates.append(timed(post_otlp, otlp_key, base, otlp_bodies))
                print(f"run {run + 1}: events {events_rates[-1]:,.0f}/s, OTLP {otlp_rates[-1]:,.0f} spans/s "
                      f"({sum(map(len, otlp_bodies)) / len(otlp_bodies) / 1024:,.0f} KiB per protobuf export)")
            same = answer(base, events_key) == answer(base, otlp_key)
    events_rate, otlp_rate = statistics.median(events_rates), statistics.median(otlp_rates)
    ratio = otlp_rate / events_rate
    print(f"median of {args.runs} runs ({args.batches} x {BATCH}-item batches each, {args.workers} workers):")
    print(f"  POST /v1/model-usage/events: {events_rate:,.0f} events/s")
    print(f"  POST /v1/traces (protobuf):  {otlp_rate:,.0f} spans/s")
    print(f"  OTLP / events: {ratio:.2f}x (target >= {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'missed'})")
    print(f"  same usage stored by both: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
