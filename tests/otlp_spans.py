"""Hand-made OTLP trace exports: spans with gen-AI attributes, as protobuf messages or OTLP JSON."""
import base64
import json

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

PROTOBUF = "application/x-protobuf"
BASE_NS = 1_773_828_000 * 10**9  # 2026-03-18T10:00:00Z


def any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def attributes(values: dict) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in values.items()]


def trace_id(n: int) -> bytes:
    return (0xA0 << 120 | n).to_bytes(16, "big")


def span_id(n: int) -> bytes:
    return (0xB0 << 56 | n).to_bytes(8, "big")


def span(trace: int, number: int, parent: int | None = None, start_ns: int = BASE_NS, seconds: float = 1.5,
         **attrs) -> Span:
    """A span; attribute names are given with '__' for '.' (gen_ai__request__model=...)."""
    return Span(trace_id=trace_id(trace), span_id=span_id(number),
                parent_span_id=span_id(parent) if parent is not None else b"",
                name="chat", kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start_ns,
                end_time_unix_nano=start_ns + int(seconds * 10**9),
                attributes=attributes({key.replace("__", "."): value for key, value in attrs.items()}))


def llm(trace: int, number: int, model="gpt-4o", system="openai", input_tokens=100, output_tokens=20,
        parent=None, **attrs) -> Span:
    """A model call span in the current conventions."""
    return span(trace, number, parent, gen_ai__request__model=model, gen_ai__system=system,
                gen_ai__usage__input_tokens=input_tokens, gen_ai__usage__output_tokens=output_tokens, **attrs)


def export(spans: list[Span], resource: dict | None = None) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": attributes({"service.name": "test-app", **(resource or {})})},
        scope_spans=[ScopeSpans(scope={"name": "tests"}, spans=spans)])])


def otlp_json(message: ExportTraceServiceRequest) -> bytes:
    """OTLP's JSON encoding: protobuf's JSON mapping with trace and span ids in hex."""
    document = json_format.MessageToDict(message)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for item in scope_spans.get("spans", []):
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in item:
                        item[name] = base64.b64decode(item[name]).hex()
    return json.dumps(document).encode()


def event_id(trace: int, number: int) -> str:
    return f"{trace_id(trace).hex()}:{span_id(number).hex()}"
