"""Schemathesis against the app in process: every operation of /openapi.json, all default checks.

The app runs on its own database holding a read+write key (given to schemathesis as the
spec's bearer scheme, so it also tries requests without it) and a few model
configurations, so that generated writes can succeed. The spec states every rule it can;
`fit_positive` teaches the generator the few it can only state in words (configurations
must exist, startDate before endDate, the bucket limit, month lengths, the span of
instants once an offset is applied), and only for the cases meant to be valid: invalid
ones reach the server exactly as generated.
"""
import os
import shutil
import tempfile
from datetime import date, datetime, timedelta, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from conftest import create_config
from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction
from usage_server.schemas import LAST_DATE, MAX_INSTANT, MIN_INSTANT

CONFIG_IDS = ("cfg_a", "cfg_b", "cfg_c")
MAX_EXAMPLES = 100  # per operation, after the coverage phase's own cases
CASES_RUN = []


def owner_with_configs():
    """An app on its own temporary database with a read+write key and a few configurations.

    Made when the module is collected, since the schema is read then; removed at the end.
    """
    workdir = tempfile.mkdtemp(prefix="usage-schemathesis-")
    app = create_app({"TESTING": True, "DATABASE": os.path.join(workdir, "usage.sqlite"), "BUSY_TIMEOUT_MS": 200})
    conn = connect(app.config)
    with write_transaction(conn):
        _, key = create_key(conn, "acme", ["read", "write"])
    conn.close()
    client = app.test_client()
    for config_id in CONFIG_IDS:
        create_config(client, key, config_id)
    return workdir, app, key


WORKDIR, APP, KEY = owner_with_configs()
CONFIG = SchemathesisConfig.from_dict({
    "seed": 20260318,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
    "auth": {"openapi": {"bearerAuth": {"bearer": KEY}}},
    # OPTIONS /v1/model-usage/events also advertises GET: that is the details operation of a
    # configuration whose id is "events", documented once, under /v1/model-usage/{modelConfigId}.
    "operations": [{"include-path": "/v1/model-usage/events", "include-method": "POST",
                    "checks": {"allow_header_conformance": {"enabled": False}}}],
})
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module")
def report_and_clean_up(request):
    """Named by the test (schemathesis's tests do not take autouse fixtures)."""
    yield
    shutil.rmtree(WORKDIR, ignore_errors=True)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nschemathesis: {len(CASES_RUN)} cases over {len(set(CASES_RUN))} operations")


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


def fit_positive(case) -> None:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
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
    if case.method == "POST" and case.operation.path == "/v1/model-usage/events" and isinstance(case.body, dict):
        for index, event in enumerate(case.body.get("events", [])):
            if isinstance(event, dict):
                event["modelConfigId"] = CONFIG_IDS[index % len(CONFIG_IDS)]
                event["timestamp"] = valid_instant(event["timestamp"])


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_api(case, report_and_clean_up):
    fit_positive(case)
    CASES_RUN.append(case.operation.label)
    case.call_and_validate()

