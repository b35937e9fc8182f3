"""POST /v1/traces: an OTLP/HTTP receiver that stores gen-AI spans as usage events.

Applications instrumented with OpenTelemetry's generative-AI conventions point their
exporter here. A span naming a model and carrying token usage becomes one event, stored by
the events endpoint's own path (ingest.store_events, each id once, rollups in the same
transaction); every other span is ignored. Decoding and mapping run no SQL per span: the
model configurations are looked up once per distinct id.
"""
import base64
import json
import re
import zlib
from dataclasses import dataclass

from flask import Blueprint, current_app, jsonify, request
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

from . import pricing, queries
from .api import body_limit, read_body, too_large
from .auth import current_owner_id, now_iso, requires_scope
from .errors import ApiError, detail
from .ingest import NewEvent, store_events
from .retention import horizon_date, horizon_us
from .schemas import CONFIG_ID, MAX_INSTANT, MAX_TOKENS, MIN_INSTANT
from .storage import get_db, write_transaction

bp = Blueprint("otlp", __name__)

MIB = 1024 * 1024
MAX_BODY = 32 * MIB  # OTLP_MAX_CONTENT_LENGTH: as sent (compressed or not)
MAX_DECOMPRESSED = 64 * MIB  # OTLP_MAX_DECOMPRESSED_LENGTH: a gzip body once inflated
PROTOBUF, JSON = "application/x-protobuf", "application/json"

MODEL = ("gen_ai.response.model", "gen_ai.request.model")
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
CONFIG_KEY, BILLING_KEY = "usage.model_config_id", "usage.billing_source"
SPAN_KEYS = frozenset(MODEL + PROVIDER + INPUT + OUTPUT + CACHE_READ + CACHE_WRITE + (CONFIG_KEY, BILLING_KEY))
USAGE_KEYS, MODEL_KEYS = frozenset(INPUT + OUTPUT), frozenset(MODEL)
BILLING_SOURCES = ("platform", "user")
MAX_NAME = 128  # a config's modelId and provider
MIN_US = 0
MAX_US = int((MAX_INSTANT - MIN_INSTANT).total_seconds()) * 1_000_000 + MAX_INSTANT.microsecond
NOT_AUTO = re.compile(r"[^a-z0-9_.-]")
MAX_REASONS = 5  # distinct reasons listed in partialSuccess.errorMessage
# the google.rpc.Status code of each HTTP status, for protobuf clients
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 3, 415: 3, 429: 8, 500: 13, 503: 14}


class Rejected(Exception):
    """A usage span that cannot be stored; the others of its request still are."""


@dataclass
class UsageSpan:
    """A span carrying usage, its attributes (the wanted ones) merged over its resource's."""

    key: tuple[bytes, bytes]
    span: object
    attributes: dict
    resource: dict


# --- decoding ---------------------------------------------------------------------


def decode_request() -> ExportTraceServiceRequest:
    """The request's ExportTraceServiceRequest, from protobuf or OTLP JSON, gzip or not."""
    if request.mimetype not in (PROTOBUF, JSON):
        raise ApiError(415, f"send {PROTOBUF} or {JSON}, not {request.mimetype or 'no Content-Type'}")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity", ""):
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported; send gzip or nothing")
    body = read_body()
    if encoding == "gzip":
        body = inflate(body, current_app.config.get("OTLP_MAX_DECOMPRESSED_LENGTH", MAX_DECOMPRESSED))
    if request.mimetype == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            raise undecodable("the body is not a protobuf ExportTraceServiceRequest") from None
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("not an object")
        hex_ids_to_base64(document)
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (ValueError, TypeError, RecursionError, json_format.ParseError):
        raise undecodable("the body is not an OTLP JSON ExportTraceServiceRequest") from None


def undecodable(message: str) -> ApiError:
    return ApiError(400, message, [detail("", "must be an OTLP ExportTraceServiceRequest", "UNDECODABLE")])


def inflate(data: bytes, limit: int) -> bytes:
    """Gunzip (every member), never holding more than limit + 1 bytes of output: a small
    body that inflates past the limit is a 413 as soon as it gets there."""
    parts, size = [], 0
    inflater = zlib.decompressobj(wbits=31)
    try:
        while True:
            piece = inflater.decompress(data, limit + 1 - size)
            size += len(piece)
            if size > limit:
                raise ApiError(413, f"{too_large(limit)} once decompressed")
            parts.append(piece)
            if inflater.eof:
                data = inflater.unused_data
                if not data:
                    return b"".join(parts)
                inflater = zlib.decompressobj(wbits=31)
            else:
                data = inflater.unconsumed_tail
                if not data and not piece:
                    raise zlib.error("truncated")
    except zlib.error:
        raise undecodable("the body is not valid gzip") from None


def hex_ids_to_base64(document: dict) -> None:
    """OTLP JSON writes trace and span ids in hex; protobuf's JSON mapping reads bytes as base64."""
    for resource_spans in listed(document, "resourceSpans"):
        for scope_spans in listed(resource_spans, "scopeSpans"):
            for span in listed(scope_spans, "spans"):
                convert_ids(span)
                for link in listed(span, "links"):
                    convert_ids(link)


def listed(parent, name) -> list:
    value = parent.get(name) if isinstance(parent, dict) else None
    return value if isinstance(value, list) else []


def convert_ids(item) -> None:
    if isinstance(item, dict):
        for name in ("traceId", "spanId", "parentSpanId"):
            if isinstance(item.get(name), str):
                item[name] = base64.b64encode(bytes.fromhex(item[name])).decode()


# --- mapping spans to events ----------------------------------------------------------------


SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value"))


def wanted(attributes) -> dict:
    """The attributes the mapping reads, as plain values (None for arrays, maps and empty values)."""
    found = {}
    for kv in attributes:
        key = kv.key
        if key in SPAN_KEYS:
            value = kv.value
            kind = value.WhichOneof("value")
            found[key] = getattr(value, kind) if kind in SCALARS else None
    return found


def usage_spans(export: ExportTraceServiceRequest) -> list[UsageSpan]:
    """The spans that carry usage and have no descendant in this request that also does
    (frameworks repeat their children's totals on the parent: only the innermost count)."""
    found, parents = [], {}
    for resource_spans in export.resource_spans:
        resource = None
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                key = (span.trace_id, span.span_id)
                parents[key] = (span.trace_id, span.parent_span_id) if span.parent_span_id else None
                attributes = wanted(span.attributes)
                if USAGE_KEYS.isdisjoint(attributes) or MODEL_KEYS.isdisjoint(attributes):
                    continue
                if resource is None:
                    resource = wanted(resource_spans.resource.attributes)
                found.append(UsageSpan(key, span, attributes, resource))
    covered = set()  # spans with a usage descendant
    for usage in found:
        ancestor = parents.get(usage.key)
        while ancestor is not None and ancestor in parents and ancestor not in covered:
            covered.add(ancestor)
            ancestor = parents[ancestor]
    return [usage for usage in found if usage.key not in covered]


def attribute(usage: UsageSpan, names: tuple[str, ...], resource_too: bool = False):
    for source in (usage.attributes, usage.resource) if resource_too else (usage.attributes,):
        for name in names:
            value = source.get(name)
            if value is not None and value != "":
                return value
    return None


def token_count(usage: UsageSpan, names: tuple[str, ...]) -> int:
    value = attribute(usage, names)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise Rejected(f"{names[0]} must be an integer from 0 to {MAX_TOKENS}")
    return value


def text(usage: UsageSpan, names: tuple[str, ...], what: str, resource_too: bool = False) -> str | None:
    value = attribute(usage, names, resource_too)
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > MAX_NAME:
        raise Rejected(f"{what} must be a string of at most {MAX_NAME} characters without NUL")
    return value


def auto_config_id(provider: str, model: str) -> str:
    return NOT_AUTO.sub("-", f"{provider}.{model}".lower())[:64]


@dataclass(frozen=True)
class Mapped:
    event: NewEvent
    config_id: str
    auto: tuple[str, str] | None  # (provider, model) of an automatic config, None for a named one


def map_span(usage: UsageSpan) -> Mapped | None:
    """The event of a usage span; None when it names no model; Rejected when it cannot be stored."""
    model = text(usage, MODEL, "the model name")
    if model is None:
        return None
    trace_id, span_id = usage.key
    if len(trace_id) != 16 or len(span_id) != 8 or not any(trace_id) or not any(span_id):
        raise Rejected("the trace id must be 16 bytes and the span id 8, not all zero")
    span = usage.span
    if not span.end_time_unix_nano:
        raise Rejected("the span has no end time")
    ts_us = span.end_time_unix_nano // 1000
    if not MIN_US <= ts_us <= MAX_US:
        raise Rejected("the span's end time is out of range")
    if span.start_time_unix_nano > span.end_time_unix_nano:
        raise Rejected("the span ends before it starts")
    execution_us = (span.end_time_unix_nano - span.start_time_unix_nano) // 1000 if span.start_time_unix_nano else None
    prompt, completion = token_count(usage, INPUT), token_count(usage, OUTPUT)
    cached, written = token_count(usage, CACHE_READ), token_count(usage, CACHE_WRITE)
    if cached + written > prompt:
        raise Rejected("cache read and cache creation tokens exceed the input tokens (which include them)")
    billing = text(usage, (BILLING_KEY,), BILLING_KEY, resource_too=True) or "platform"
    if billing not in BILLING_SOURCES:
        raise Rejected(f"{BILLING_KEY} must be platform or user")
    config_id = text(usage, (CONFIG_KEY,), CONFIG_KEY, resource_too=True)
    auto = None
    if config_id is None:
        provider = text(usage, PROVIDER, "the provider name") or "unknown"
        config_id, auto = auto_config_id(provider, model), (provider, model)
    elif not CONFIG_ID.match(config_id):
        raise Rejected(f"{CONFIG_KEY} {config_id!r} is not one of your model configurations")
    event = NewEvent(
        event_id=f"{trace_id.hex()}:{span_id.hex()}",
        ts_us=ts_us,
        config_id=config_id,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_micros=None,
        execution_us=execution_us,
        billing_source=billing,
        cached_prompt_tokens=cached,
        cache_write_tokens=written,
    )
    return Mapped(event, config_id, auto)


class Rejections:
    """Rejected spans: how many, and the first few distinct reasons."""

    def __init__(self):
        self.count, self.reasons = 0, {}

    def add(self, event_id: str, reason: str) -> None:
        self.count += 1
        if reason not in self.reasons and len(self.reasons) < MAX_REASONS:
            self.reasons[reason] = event_id

    def message(self) -> str:
        return "; ".join(f"span {event_id}: {reason}" for reason, event_id in self.reasons.items())


def map_spans(export: ExportTraceServiceRequest, rejections: Rejections) -> list[Mapped]:
    mapped = []
    for usage in usage_spans(export):
        try:
            item = map_span(usage)
        except Rejected as exc:
            rejections.add(f"{usage.key[0].hex()}:{usage.key[1].hex()}", str(exc))
            continue
        if item is not None:
            mapped.append(item)
    return mapped


# --- storing ----------------------------------------------------------------------------------


def create_auto_configs(db, owner_id: int, autos: dict[str, tuple[str, str]]) -> None:
    """Create the automatic configs not there yet (displayName = the model); inside the write
    transaction, and ON CONFLICT DO NOTHING, so two workers' first use both succeed."""
    for config_id, (provider, model) in autos.items():
        db.execute(queries.INSERT_CONFIG, {
            "owner_id": owner_id, "id": config_id, "display_name": model, "model_id": model,
            "provider": provider, "model_name": pricing.model_name(db, model, provider),  # as a created config's
            "provider_key_id": None, "settings": "{}", "created_at": now_iso(),
        })


def store(owner_id: int, mapped: list[Mapped], rejections: Rejections) -> None:
    """Store the mapped events; those naming a config the owner does not have are rejected."""
    db = get_db()
    rows = {}
    for config_id in {item.config_id for item in mapped}:
        rows[config_id] = db.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": config_id}).fetchone()
    autos = {item.config_id: item.auto for item in mapped if item.auto and rows[item.config_id] is None}
    events = []
    for item in mapped:
        if rows[item.config_id] is None and item.config_id not in autos:
            rejections.add(item.event.event_id,
                           f"{CONFIG_KEY} {item.config_id!r} is not one of your model configurations")
        else:
            events.append(item.event)
    if not events:
        return
    with write_transaction(db):
        events = without_pruned(db, events, rejections)
        if not events:
            return
        if autos:
            create_auto_configs(db, owner_id, autos)
            for config_id in autos:
                rows[config_id] = db.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": config_id}).fetchone()
        store_events(db, owner_id, events, {event.config_id: rows[event.config_id] for event in events})


def without_pruned(db, events: list[NewEvent], rejections: Rejections) -> list[NewEvent]:
    """The events at or after the retention horizon; older ones are rejected one by one, as the
    events endpoint refuses them: their stored copies may be pruned, so a re-export would count twice."""
    horizon = horizon_us(db)
    if horizon is None:
        return events
    reason = f"ends before the retention horizon {horizon_date(horizon).isoformat()} (UTC): events before it are deleted"
    for event in events:
        if event.ts_us < horizon:
            rejections.add(event.event_id, reason)
    return [event for event in events if event.ts_us >= horizon]


# --- the endpoint --------------------------------------------------------------------------------


@bp.post("/v1/traces")
@body_limit("OTLP_MAX_CONTENT_LENGTH", MAX_BODY)
@requires_scope("write")
def export_traces():
    export = decode_request()
    rejections = Rejections()
    store(current_owner_id(), map_spans(export, rejections), rejections)
    answer = ExportTraceServiceResponse()
    if rejections.count:
        answer.partial_success.rejected_spans = rejections.count
        answer.partial_success.error_message = f"{rejections.count} span(s) rejected: {rejections.message()}"
    if request.mimetype == PROTOBUF:
        return current_app.response_class(answer.SerializeToString(), mimetype=PROTOBUF)
    return jsonify(json_format.MessageToDict(answer))


@bp.after_request
def otlp_answer(response):
    """Errors answer a protobuf request with a google.rpc.Status, as OTLP/HTTP asks; JSON
    requests keep the server's usual error body. Never cached."""
    response.headers.setdefault("Cache-Control", "no-store")
    if request.mimetype == PROTOBUF and response.status_code >= 400 and response.mimetype == JSON:
        body = response.get_json(silent=True) or {}
        status = status_pb2.Status(code=GRPC_CODES.get(response.status_code, 2), message=body.get("error", ""))
        response.set_data(status.SerializeToString())
        response.mimetype = PROTOBUF
    return response
