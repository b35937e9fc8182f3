"""Schemathesis against the app in process: every operation of /openapi.json, all default checks.

The app runs on a database of its own, once per engine, holding a read+write key (given
to schemathesis as the spec's bearer scheme, so it also tries requests without it) and a
few model configurations, so that generated writes can succeed. The spec states every
rule it can; `fit_positive` teaches the generator the few it can only state in words
(configurations must exist, startDate before endDate, the bucket limit, month lengths, a
webhook's host must be public, the span of instants once an offset is applied, no NUL
character in any text, token details within the counts they detail, that a protobuf body of
POST /v1/traces is an ExportTraceServiceRequest), and only for the cases meant to be valid:
invalid ones reach the server exactly as generated.
"""
import secrets
from datetime import date, datetime, timedelta, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from conftest import create_config
import otlp_spans
from usage_server import create_app
from usage_server.auth import create_key, hash_key
from usage_server.storage import connect, write_transaction
from usage_server.schemas import LAST_DATE, MAX_INSTANT, MIN_INSTANT

CONFIG_IDS = ("cfg_a", "cfg_b", "cfg_c")
MAX_EXAMPLES = 100  # per operation, after the coverage phase's own cases
CASES_RUN = []


KEY_ID = secrets.token_hex(6)
KEY = f"usk_{KEY_ID}_{secrets.token_urlsafe(30)}"  # the key of each engine's database
SET_KEY = """
UPDATE api_key
SET id = :id, key_hash = :key_hash
WHERE id = :made
"""


class Served:
    """The app schemathesis calls: the `served` fixture's, on a database of the engine under
    test. The schema is read when the module is collected, before any database: from an
    app that opens none to serve it."""

    app = create_app({"TESTING": True, "DATABASE": ":memory:"}, prepare_database=False)

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


SERVED = Served()
CONFIG = SchemathesisConfig.from_dict({
    "seed": 20260318,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
    "auth": {"openapi": {"bearerAuth": {"bearer": KEY}}},
    # OPTIONS /v1/model-usage/events also advertises GET: that is the details operation of a
    # configuration whose id is "events", documented once, under /v1/model-usage/{modelConfigId}.
    "operations": [{"include-path": "/v1/model-usage/events", "include-method": "POST",
                    "checks": {"allow_header_conformance": {"enabled": False}}},
                   # An OTLP body is bytes (any byte string is a "string" of format binary) or OTLP JSON,
                   # whose receivers must ignore unknown fields: the schema has no invalid body to draw,
                   # so cases it calls negative are valid requests. Undecodable bodies: tests/test_otlp.py.
                   {"include-path": "/v1/traces", "include-method": "POST",
                    "checks": {"negative_data_rejection": {"enabled": False}}}],
})
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")  # OTLP's bytes, sent as they are
schema = schemathesis.openapi.from_wsgi("/openapi.json", SERVED, config=CONFIG)


@pytest.fixture(scope="module")
def served(engine, new_database, request):
    """A new database of the engine with KEY (read+write) and a few configurations, served
    while the module's tests of that engine run; reports what they ran (schemathesis's
    tests do not take autouse fixtures, so the test names this one)."""
    app = create_app({"TESTING": True, "DATABASE": new_database(engine), "BUSY_TIMEOUT_MS": 200})
    conn = connect(app.config)
    with write_transaction(conn):
        made, _ = create_key(conn, "acme", ["read", "write"])
        conn.execute(SET_KEY, {"id": KEY_ID, "key_hash": hash_key(KEY), "made": made})
    conn.close()
    for config_id in CONFIG_IDS:
        create_config(app.test_client(), KEY, config_id)
    SERVED.app, cases_before = app, len(CASES_RUN)
    yield
    SERVED.app = Served.app
    run = CASES_RUN[cases_before:]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nschemathesis ({engine}): {len(run)} cases over {len(set(run))} operations")


def valid_day(text: str) -> str:
    """Clamp an impossible day of month (the pattern allows 31 in every month) to the 28th."""
    try:
        date.fromisoformat(text[:10])
        return text
    except ValueError:
        return text[:8] + "28" + text[10:]


def valid_instant(text: str) -> str:
    """A real day, and inside the accepted span once the offset is applied (e.g. not 1970-01-01T00:00+01:00)."""
    text = valid_day(text)
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return text if MIN_INSTANT <= instant <= MAX_INSTANT else "2000" + text[4:]


def without_nul(value):
    """The value with each NUL in its texts and keys replaced (PostgreSQL cannot store NUL,
    so the server refuses it in any text)."""
    if isinstance(value, str):
        return value.replace("\x00", "\x01")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


def fit_positive(case) -> None:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    case.body = without_nul(case.body)
    query = case.query if isinstance(case.query, dict) else None
    if case.operation.path == "/v1/model-usage" and query:
        days = sorted(date.fromisoformat(valid_day(query[name])) for name in ("startDate", "endDate") if name in query)
        if days:  # both dates, in order, within the 10,000-bucket limit, without a period
            query.pop("period", None)
            span = timedelta(days=400 if query.get("granularity") == "hour" else 9000)
            end = min(days[-1], LAST_DATE)
            if end - days[0] > span:  # days[0] + span is then a real date, before LAST_DATE
                end = days[0] + span
            query["startDate"], query["endDate"] = days[0].isoformat(), end.isoformat()
    if case.operation.path == "/v1/traces" and case.media_type == "application/x-protobuf":
        drawn = case.body.encode() if isinstance(case.body, str) else bytes(case.body or b"")
        hint = drawn.hex()[:64]  # random bytes are rarely a message: a span carrying them, beside a model call
        case.body = otlp_spans.export([otlp_spans.llm(1, 1 + len(hint)), otlp_spans.span(1, 2, drawn=hint)]).SerializeToString()
    if case.method == "POST" and case.operation.path == "/v1/budgets" and isinstance(case.body, dict):
        if "modelConfigId" in case.body:  # one of the owner's configurations
            case.body["modelConfigId"] = CONFIG_IDS[0]
        if "webhookUrl" in case.body:  # a URL of a public address (resolved without DNS, never called here)
            case.body["webhookUrl"] = "https://93.184.216.34/hooks/budget"
    if case.method == "POST" and case.operation.path == "/v1/model-usage/events" and isinstance(case.body, dict):
        for index, event in enumerate(case.body.get("events", [])):
            if isinstance(event, dict):
                event["modelConfigId"] = CONFIG_IDS[index % len(CONFIG_IDS)]
                event["timestamp"] = valid_instant(event["timestamp"])
                fit_token_details(event)


def fit_token_details(event: dict) -> None:
    """Cached and cache-write tokens within promptTokens, reasoning tokens within completionTokens."""
    room = {"cachedPromptTokens": event["promptTokens"], "reasoningTokens": event["completionTokens"]}
    for name, limit in room.items():
        if name in event:
            event[name] = min(event[name], limit)
    if "cacheWriteTokens" in event:
        event["cacheWriteTokens"] = min(event["cacheWriteTokens"], event["promptTokens"] - event.get("cachedPromptTokens", 0))


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_api(case, served):
    fit_positive(case)
    CASES_RUN.append(case.operation.label)
    case.call_and_validate()

