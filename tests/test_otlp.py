"""POST /v1/traces with hand-made exports: the mapping of spans to events, proven by reading
usage back and by comparing with the same usage sent to POST /v1/model-usage/events; the
encodings, partial success, double counting, idempotence, and OTLP's errors. Both engines.
"""
import gzip
import json
import threading

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from conftest import assert_error, bearer, create_config, post_events
from otlp_spans import BASE_NS, PROTOBUF, event_id, export, llm, otlp_json, span
from owners import app, make_key  # noqa: F401 (one database for the module)
from support import catalogue_prices
from usage_server import create_app, otlp
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

RANGE = "startDate=2026-03-18&endDate=2026-03-18"
MIB = 1024 * 1024


def send(client, key, message, encoding="protobuf", gzipped=False, headers=None):
    body = message.SerializeToString() if encoding == "protobuf" else otlp_json(message)
    extra = dict(headers or {})
    if gzipped:
        body, extra["Content-Encoding"] = gzip.compress(body), "gzip"
    kind = PROTOBUF if encoding == "protobuf" else "application/json"
    return client.post("/v1/traces", data=body, content_type=kind, headers={**bearer(key), **extra})


def accepted(response) -> ExportTraceServiceResponse:
    """The 200 answer, decoded from the request's encoding."""
    assert response.status_code == 200, response.get_data()
    if response.mimetype == PROTOBUF:
        return ExportTraceServiceResponse.FromString(response.get_data())
    assert response.mimetype == "application/json"
    answer = ExportTraceServiceResponse()
    partial = response.get_json().get("partialSuccess", {})
    answer.partial_success.rejected_spans = int(partial.get("rejectedSpans", 0))
    answer.partial_success.error_message = partial.get("errorMessage", "")
    return answer


def usage(client, key, query=RANGE):
    response = client.get(f"/v1/model-usage?{query}", headers=bearer(key))
    assert response.status_code == 200
    return response.get_json()


def recent(client, key, config_id):
    response = client.get(f"/v1/model-usage/{config_id}?limit=1000", headers=bearer(key))
    assert response.status_code == 200, response.get_json()
    return sorted(response.get_json()["recentUsage"], key=lambda item: item["id"])


def configs(client, key) -> dict:
    return {item["id"]: item for item in client.get("/v1/model-configs", headers=bearer(key)).get_json()["data"]}


def test_spans_map_to_the_events_the_events_endpoint_stores_for_the_same_usage(client, make_key):
    """Every attribute variant of the contract, then the same usage as plain events by another
    owner: the answers are identical, and the tokens equal a plain sum."""
    traced, plain = make_key("traced"), make_key("plain")
    create_config(client, traced, "cfg_named", model_id="claude-haiku-4-5", provider="Anthropic")
    resource_config = export([llm(9, 1, model="ignored-by-config")], resource={"usage.model_config_id": "cfg_named"})
    spans = [
        llm(1, 1),  # request model, gen_ai.system
        span(1, 2, start_ns=BASE_NS + 60 * 10**9, seconds=0.25, gen_ai__request__model="gpt-4o",
             gen_ai__response__model="gpt-4o-mini", gen_ai__provider__name="openai", gen_ai__system="ignored",
             gen_ai__usage__prompt_tokens=1000, gen_ai__usage__completion_tokens=300,
             gen_ai__usage__cache_read_input_tokens=400),  # older names; response model and provider.name win
        llm(2, 3, model="claude-haiku-4-5", system="anthropic", input_tokens=5000, output_tokens=10,
            gen_ai__usage__cache_read__input_tokens=3000, gen_ai__usage__cache_creation__input_tokens=1000,
            usage__billing_source="user"),
        llm(3, 4, model="gpt-4o", input_tokens=7, output_tokens=0, usage__model_config_id="cfg_named"),
        span(3, 5, seconds=2, gen_ai__request__model="text-embedding-3-small", gen_ai__system="openai",
             gen_ai__usage__input_tokens=42),  # input only: an embedding
    ]
    assert accepted(send(client, traced, export(spans))).partial_success.rejected_spans == 0
    assert accepted(send(client, traced, resource_config)).partial_success.rejected_spans == 0

    made = configs(client, traced)
    assert {(c["id"], c["displayName"], c["modelId"], c["provider"]) for c in made.values() if c["id"] != "cfg_named"} == {
        ("openai.gpt-4o", "gpt-4o", "gpt-4o", "openai"),
        ("openai.gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", "openai"),
        ("anthropic.claude-haiku-4-5", "claude-haiku-4-5", "claude-haiku-4-5", "anthropic"),
        ("openai.text-embedding-3-small", "text-embedding-3-small", "text-embedding-3-small", "openai"),
    }
    for config in made.values():
        if config["id"] != "cfg_named":
            create_config(client, plain, config["id"], model_id=config["modelId"], provider=config["provider"],
                          displayName=config["displayName"])
    create_config(client, plain, "cfg_named", model_id="claude-haiku-4-5", provider="Anthropic")
    stamp = "2026-03-18T10:00:01.500000Z"
    post_events(client, plain, [
        {"id": event_id(1, 1), "timestamp": stamp, "modelConfigId": "openai.gpt-4o", "promptTokens": 100,
         "completionTokens": 20, "executionTime": 1.5},
        {"id": event_id(1, 2), "timestamp": "2026-03-18T10:01:00.250000Z", "modelConfigId": "openai.gpt-4o-mini",
         "promptTokens": 1000, "completionTokens": 300, "executionTime": 0.25, "cachedPromptTokens": 400},
        {"id": event_id(2, 3), "timestamp": stamp, "modelConfigId": "anthropic.claude-haiku-4-5",
         "promptTokens": 5000, "completionTokens": 10, "executionTime": 1.5, "billingSource": "user",
         "cachedPromptTokens": 3000, "cacheWriteTokens": 1000},
        {"id": event_id(3, 4), "timestamp": stamp, "modelConfigId": "cfg_named", "promptTokens": 7,
         "completionTokens": 0, "executionTime": 1.5},
        {"id": event_id(3, 5), "timestamp": "2026-03-18T10:00:02Z", "modelConfigId": "openai.text-embedding-3-small",
         "promptTokens": 42, "completionTokens": 0, "executionTime": 2},
        {"id": event_id(9, 1), "timestamp": stamp, "modelConfigId": "cfg_named", "promptTokens": 100,
         "completionTokens": 20, "executionTime": 1.5},
    ])
    for query in (RANGE, RANGE + "&granularity=hour"):
        assert usage(client, traced, query) == usage(client, plain, query)
    for config_id in made:
        assert recent(client, traced, config_id) == recent(client, plain, config_id)
    summary = usage(client, traced)["summary"]
    assert summary["totalRequests"] == 6
    assert summary["totalTokens"] == 120 + 1300 + 5010 + 7 + 42 + 120
    assert summary["userTokens"] == 5010
    prices = catalogue_prices()  # the server prices spans like events without cost
    assert "gpt-4o" in prices and summary["totalCost"] > 0


def test_json_and_gzip_encodings_store_the_same_events(client, make_key):
    sums = set()
    for encoding, gzipped in (("protobuf", False), ("protobuf", True), ("json", False), ("json", True)):
        key = make_key(f"{encoding}-{gzipped}")
        response = send(client, key, export([llm(1, 7, input_tokens=5, output_tokens=6), llm(1, 8, input_tokens=9)]),
                        encoding, gzipped)
        assert response.mimetype == (PROTOBUF if encoding == "protobuf" else "application/json")
        if encoding == "json":
            assert response.get_json() == {}  # full success: no partialSuccess
        assert accepted(response).partial_success.rejected_spans == 0
        sums.add(json.dumps(usage(client, key), sort_keys=True))
        assert [item["id"] for item in recent(client, key, "openai.gpt-4o")] == [event_id(1, 7), event_id(1, 8)]
    assert len(sums) == 1


def test_otlp_json_as_other_writers_send_it(client, make_key):
    """Upper-case hex ids, 64-bit integers as numbers or strings, the span kind as an integer."""
    key = make_key()
    document = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174", "name": "chat", "kind": 3,
        "startTimeUnixNano": "1773828000000000000", "endTimeUnixNano": 1773828002000000000,
        "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                       {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                       {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "11"}},
                       {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 2}}]}]}]}]}
    response = client.post("/v1/traces", json=document, headers=bearer(key))
    assert response.status_code == 200 and response.get_json() == {}
    (item,) = recent(client, key, "openai.gpt-4o")
    assert (item["id"], item["timestamp"], item["executionTime"], item["promptTokens"], item["completionTokens"]) == (
        "5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174", "2026-03-18T10:00:02Z", 2, 11, 2)


def test_the_same_batch_exported_twice_counts_once(client, make_key):
    key = make_key()
    message = export([llm(1, n, input_tokens=n, output_tokens=1) for n in range(1, 6)])
    accepted(send(client, key, message))
    first = usage(client, key)
    accepted(send(client, key, message))
    accepted(send(client, key, message, "json", gzipped=True))
    assert usage(client, key) == first
    assert first["summary"]["totalRequests"] == 5 and first["summary"]["totalTokens"] == 15 + 5


def test_spans_without_usage_or_model_are_ignored_without_error(client, make_key):
    key = make_key()
    message = export([
        span(1, 1, http__method="POST"),  # an HTTP span
        span(1, 2, gen_ai__request__model="gpt-4o", gen_ai__system="openai"),  # a model, no usage
        span(1, 3, gen_ai__usage__input_tokens=10, gen_ai__usage__output_tokens=3),  # usage, no model
    ])
    answer = accepted(send(client, key, message))
    assert answer.partial_success.rejected_spans == 0 and not answer.HasField("partial_success")
    assert usage(client, key)["summary"]["totalRequests"] == 0
    assert configs(client, key) == {}


def test_spans_that_cannot_be_stored_are_rejected_one_by_one(client, make_key):
    key = make_key()
    message = export([
        llm(1, 1),  # stored
        llm(1, 2, usage__model_config_id="cfg_missing"),
        llm(1, 3, input_tokens=-5),
        llm(1, 4, input_tokens=10, gen_ai__usage__cache_read__input_tokens=8,
            gen_ai__usage__cache_creation__input_tokens=3),  # cached + written > input
        llm(1, 5, usage__billing_source="someone"),
        llm(1, 6, input_tokens="many"),
        llm(1, 7, input_tokens=12, output_tokens=3),  # stored
        llm(1, 8, output_tokens="\u00b2"),  # a digit to str.isdigit, not to int()
        llm(1, 9, input_tokens="40", output_tokens=2.0),  # digits in a string, a whole double: stored
    ])
    for encoding in ("protobuf", "json"):
        answer = accepted(send(client, key, message, encoding))
        assert answer.partial_success.rejected_spans == 6
        for needle in ("cfg_missing", "gen_ai.usage.input_tokens", "cache", "usage.billing_source", event_id(1, 2)):
            assert needle in answer.partial_success.error_message
    summary = usage(client, key)["summary"]
    assert (summary["totalRequests"], summary["totalTokens"]) == (3, 120 + 15 + 42)
    assert [item["id"] for item in recent(client, key, "openai.gpt-4o")] == [event_id(1, 1), event_id(1, 7), event_id(1, 9)]


def test_a_parent_repeating_its_childrens_usage_is_not_counted(client, make_key):
    """An agent run (LangChain-like): agent -> chain -> two model calls, the agent and a
    wrapper repeating totals; only the innermost usage spans count."""
    key = make_key()
    message = export([
        span(1, 10, gen_ai__request__model="gpt-4o", gen_ai__system="openai",  # the agent: the sum
             gen_ai__usage__input_tokens=1300, gen_ai__usage__output_tokens=320),
        span(1, 11, parent=10, langchain__chain="RunnableSequence"),  # no usage, between them
        llm(1, 12, parent=11, input_tokens=300, output_tokens=20),
        span(1, 13, parent=11, gen_ai__request__model="gpt-4o", gen_ai__system="openai",  # a wrapper of 14
             gen_ai__usage__input_tokens=1000, gen_ai__usage__output_tokens=300),
        llm(1, 14, parent=13, input_tokens=1000, output_tokens=300),
        llm(2, 12, parent=99, input_tokens=5, output_tokens=5),  # another trace; its parent is elsewhere
    ])
    accepted(send(client, key, message))
    assert [item["id"] for item in recent(client, key, "openai.gpt-4o")] == sorted(
        [event_id(1, 12), event_id(1, 14), event_id(2, 12)])
    assert usage(client, key)["summary"]["totalTokens"] == 320 + 1300 + 10


def test_a_parent_exported_after_its_children_is_judged_alone(client, make_key):
    """Each export is judged alone: a usage parent that arrives in a later export than its
    children counts too (documented in docs/opentelemetry.md); one arriving with them does not."""
    key = make_key()
    children = [llm(1, 2, parent=1, input_tokens=30, output_tokens=3), llm(1, 3, parent=1, input_tokens=40, output_tokens=4)]
    parent = span(1, 1, gen_ai__request__model="gpt-4o", gen_ai__system="openai",
                  gen_ai__usage__input_tokens=70, gen_ai__usage__output_tokens=7)
    accepted(send(client, key, export(children)))
    accepted(send(client, key, export([parent])))
    assert usage(client, key)["summary"]["totalTokens"] == 77 + 77
    together = make_key("together")
    accepted(send(client, together, export([*children, parent])))
    assert usage(client, together)["summary"]["totalTokens"] == 77


def test_first_use_of_a_model_by_two_writers_at_once_succeeds(client, make_key, monkeypatch):
    """Both found no config before their write transaction; the second's insert does nothing
    and it uses the config the first created."""
    key = make_key()
    real = otlp.write_transaction
    other = threading.Event()

    def interleaved(db):
        if not other.is_set():
            other.set()  # another worker gets there first, with the same model
            accepted(send(client, key, export([llm(5, 1)])))
        return real(db)

    monkeypatch.setattr(otlp, "write_transaction", interleaved)
    accepted(send(client, key, export([llm(6, 1)])))
    assert list(configs(client, key)) == ["openai.gpt-4o"]
    assert usage(client, key)["summary"]["totalRequests"] == 2


def test_automatic_config_ids_are_cleaned_and_cut(client, make_key):
    key = make_key()
    model = "Meta/Llama 3.1 405B:Instruct" + "x" * 80
    accepted(send(client, key, export([llm(1, 1, model=model, system="AWS Bedrock")])))
    (config,) = configs(client, key).values()
    expected = ("aws-bedrock." + model.lower().replace("/", "-").replace(" ", "-").replace(":", "-"))[:64]
    assert (config["id"], config["modelId"], config["provider"], config["displayName"]) == (
        expected, model, "AWS Bedrock", model)


def test_unsupported_media_types_are_415(client, make_key):
    key = make_key()
    body = export([llm(1, 1)]).SerializeToString()
    for kind in ("text/plain", "application/octet-stream", "application/grpc"):
        assert_error(client.post("/v1/traces", data=body, content_type=kind, headers=bearer(key)), 415,
                     "unsupported_media_type")
    assert_error(client.post("/v1/traces", data=body, headers=bearer(key)), 415)  # no Content-Type
    response = client.post("/v1/traces", data=body, content_type=PROTOBUF,
                           headers={**bearer(key), "Content-Encoding": "br"})
    assert response.status_code == 415 and status(response).code == 3
    assert usage(client, key)["summary"]["totalRequests"] == 0


def status(response) -> status_pb2.Status:
    """A protobuf request's error: a google.rpc.Status, never the JSON body."""
    assert response.mimetype == PROTOBUF, response.get_data()
    answer = status_pb2.Status.FromString(response.get_data())
    assert answer.message
    return answer


@pytest.mark.parametrize("kind, body, gzipped", [
    (PROTOBUF, b"\xff\xff\xff\xff", False),
    (PROTOBUF, b"\x0a\x05\x0a", False),  # a length past the end
    ("application/json", b"{not json", False),
    ("application/json", b"[1, 2]", False),
    ("application/json", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', False),
    ("application/json", b'{"resourceSpans": 5}', False),
    (PROTOBUF, b"\x1f\x8b\x08\x00not gzip at all", True),
    (PROTOBUF, gzip.compress(b"\x0a\x00" * 100)[:-12], True),  # truncated
])
def test_undecodable_bodies_are_400(client, make_key, kind, body, gzipped):
    key = make_key()
    headers = {**bearer(key), **({"Content-Encoding": "gzip"} if gzipped else {})}
    response = client.post("/v1/traces", data=body, content_type=kind, headers=headers)
    if kind == PROTOBUF:
        assert response.status_code == 400 and status(response).code == 3
    else:
        assert_error(response, 400, "invalid_request")


def test_401_and_403_in_the_requests_encoding(client, make_key):
    body = export([llm(1, 1)]).SerializeToString()
    reader = make_key("reader", ("read",))
    for headers in ({}, {"Authorization": "Bearer usk_nope"}):
        response = client.post("/v1/traces", data=body, content_type=PROTOBUF, headers=headers)
        assert response.status_code == 401 and status(response).code == 16
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = client.post("/v1/traces", data=body, content_type=PROTOBUF, headers=bearer(reader))
    assert response.status_code == 403 and status(response).code == 7
    assert "write" in status(response).message
    assert_error(client.post("/v1/traces", json={}, headers={}), 401, "unauthorized")
    assert_error(client.post("/v1/traces", json={}, headers=bearer(reader)), 403, "forbidden")


def own_server(database, **config):
    """A server of its own with these settings, and a read/write key: (app, client, key)."""
    app = create_app({"TESTING": True, "DATABASE": database, **config})
    conn = connect(app.config)
    with write_transaction(conn):
        _, key = create_key(conn, "acme", ["read", "write"])
    conn.close()
    return app, app.test_client(), key


@pytest.fixture
def small_limits(engine, new_database):
    """A server of its own whose OTLP limits are small: 64 KiB as sent, 256 KiB inflated."""
    _, client, key = own_server(new_database(engine), OTLP_MAX_CONTENT_LENGTH=65536, OTLP_MAX_DECOMPRESSED_LENGTH=262144)
    return client, key


class Abandoned(Exception):
    """Leaves a write transaction without committing it."""


def test_a_busy_database_is_a_retryable_503_with_retry_after(engine, new_database):
    """Another writer holds the write lock: the export is answered 503 with Retry-After (a
    google.rpc.Status for protobuf), stores nothing, and the retry stores it."""
    app, client, key = own_server(new_database(engine), BUSY_TIMEOUT_MS=200)
    message = export([llm(1, 1)])
    other = connect(app.config)
    try:
        with write_transaction(other):
            response = send(client, key, message)
            assert response.status_code == 503 and status(response).code == 14
            assert response.headers["Retry-After"] == str(app.config["RETRY_AFTER_SECONDS"])
            assert_error(send(client, key, message, "json"), 503, "service_unavailable")
            raise Abandoned
    except Abandoned:
        pass
    finally:
        other.close()
    assert usage(client, key)["summary"]["totalRequests"] == 0
    accepted(send(client, key, message))
    assert usage(client, key)["summary"]["totalRequests"] == 1


def text_spans(count: int, text_bytes: int) -> list:
    """Model call spans carrying prompt text, as instrumentations that capture content send."""
    return [llm(1, n, gen_ai__prompt=f"{n} " + "lorem ipsum " * (text_bytes // 12)) for n in range(1, count + 1)]


def test_bodies_over_the_limit_before_or_after_decompression_are_413(small_limits):
    client, key = small_limits
    big = export(text_spans(10, 8000)).SerializeToString()
    assert 65536 < len(big) < 262144 and len(gzip.compress(big)) < 65536
    response = client.post("/v1/traces", data=big, content_type=PROTOBUF, headers=bearer(key))
    assert response.status_code == 413 and "65,536 bytes" in status(response).message
    assert_error(client.post("/v1/traces", data=otlp_json(export(text_spans(10, 8000))), content_type="application/json",
                             headers=bearer(key)), 413, "payload_too_large")
    response = client.post("/v1/traces", data=gzip.compress(big), content_type=PROTOBUF,
                           headers={**bearer(key), "Content-Encoding": "gzip"})
    assert response.status_code == 200  # small once compressed, and under the inflated limit
    huge = gzip.compress(export(text_spans(40, 8000)).SerializeToString())
    assert len(huge) < 65536
    response = client.post("/v1/traces", data=huge, content_type=PROTOBUF,
                           headers={**bearer(key), "Content-Encoding": "gzip"})
    assert response.status_code == 413 and "once decompressed" in status(response).message


def test_a_gzip_bomb_is_refused_at_the_default_limit_without_inflating_it(client, make_key, monkeypatch):
    """100 MiB of zeros in about 100 KiB: refused once the 64 MiB inflated limit is passed,
    having produced at most the limit plus one byte of output."""
    key = make_key()
    bomb = gzip.compress(b"\0" * (100 * MIB), compresslevel=9)
    assert len(bomb) < MIB
    produced = []
    real = otlp.zlib.decompressobj

    class Counting:
        def __init__(self, **kwargs):
            self.inner = real(**kwargs)

        def decompress(self, data, max_length=0):
            assert 0 < max_length <= otlp.MAX_DECOMPRESSED + 1  # never unbounded
            piece = self.inner.decompress(data, max_length)
            produced.append(len(piece))
            return piece

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(otlp.zlib, "decompressobj", Counting)
    response = client.post("/v1/traces", data=bomb, content_type=PROTOBUF,
                           headers={**bearer(key), "Content-Encoding": "gzip"})
    assert response.status_code == 413 and "64 MiB" in status(response).message
    assert sum(produced) == otlp.MAX_DECOMPRESSED + 1


def test_exports_larger_than_the_events_limit_are_accepted(client, make_key):
    """/v1/traces has its own limit: a 512-span batch with prompt text (several MiB) passes,
    while the events endpoint keeps its 2 MiB."""
    key = make_key()
    body = export(text_spans(512, 8000)).SerializeToString()
    assert 3 * MIB < len(body) < otlp.MAX_BODY
    response = client.post("/v1/traces", data=body, content_type=PROTOBUF, headers=bearer(key))
    assert accepted(response).partial_success.rejected_spans == 0
    assert usage(client, key)["summary"]["totalRequests"] == 512
    assert_error(client.post("/v1/model-usage/events", data=body, content_type="application/json", headers=bearer(key)),
                 413, "payload_too_large")
