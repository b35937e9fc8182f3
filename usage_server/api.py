"""The HTTP API: thin views that validate, query and shape JSON."""
import json
import secrets
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError

from . import pricing, queries, reports
from .auth import current_owner_id, now_iso, requires_scope
from .csvexport import details_csv, usage_csv, wants_csv
from .errors import ApiError, detail, error_response
from .etags import conditional
from .eventload import fast_events
from .ingest import NewEvent, store_events
from .money import micros_to_usd
from .observability import record_stored
from .schemas import (CONFIG_ID, PLAIN_QUERIES, DetailsQuerySchema, EmptyQuerySchema, EventBatchSchema, ModelConfigSchema,
                      UsageQuerySchema)
from .storage import engine_status, get_db, read_snapshot, write_transaction
from .timeranges import (MAX_BUCKETS, count_buckets, count_hour_buckets, iso_instant, local_midnight, local_today,
                         resolve_dates)

bp = Blueprint("api", __name__)
DRAIN_LIMIT = 64 * 1024 * 1024  # bytes of an oversized body read and discarded before a 413


def utc_now() -> datetime:
    """The current instant; tests replace it to pin "today"."""
    return datetime.now(timezone.utc)


def load_query(schema):
    """Validate the query string; a parameter given twice is an error, not a guess.
    `schema`: a schema class (a plainly valid query then skips marshmallow) or instance."""
    repeated = [name for name in request.args if len(request.args.getlist(name)) > 1]
    if repeated:
        raise ValidationError({name: ["REPEATED_PARAMETER|must be given at most once"] for name in repeated})
    args = request.args.to_dict()
    plain = PLAIN_QUERIES.get(schema)
    loaded = None if plain is None else plain(args)
    return loaded if loaded is not None else (schema() if isinstance(schema, type) else schema).load(args)


def reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def read_body() -> bytes:
    """The body. A Content-Length over the limit was refused before; a body sent without one
    (chunked) is read up to one byte past the limit, so that it is refused too, not cut short."""
    limit = request.max_content_length
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    stream, chunks, size = request.environ["wsgi.input"], [], 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        drain(stream, DRAIN_LIMIT)
        raise ApiError(413, too_large(limit), headers={"Connection": "close"})
    return b"".join(chunks)


def load_body(schema):
    """Parse JSON strictly, then validate."""
    return schema.load(parse_body())


def parse_body() -> dict:
    """The body as a JSON object, parsed strictly (decimals exact, no NaN/Infinity)."""
    raw = read_body()
    try:
        document = json.loads(raw, parse_float=Decimal, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON",
                       [detail("", "must be valid JSON (NaN and Infinity are not JSON numbers)", "INVALID_JSON")]) from None
    if not isinstance(document, dict):
        raise ApiError(400, "the body must be a JSON object", [detail("", "must be a JSON object", "INVALID_JSON")])
    if b"\\u0000" in raw:  # only then look: no text anywhere may hold NUL (PostgreSQL cannot store it)
        path = nul_path(document)
        if path is not None:
            raise ApiError(400, f"{path}: must not contain the NUL character (\\u0000)",
                           [detail(path, "must not contain the NUL character (\\u0000)", "INVALID_CHARACTER")])
    return document


def nul_path(value, path="") -> str | None:
    """The dotted path of the first key or string holding NUL, else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        if "\x00" in str(key):
            return where
        found = nul_path(item, where)
        if found is not None:
            return found
    return None


def body_limit(setting: str, default: int):
    """A view whose bodies may be larger (or smaller) than MAX_CONTENT_LENGTH: the config
    `setting`, else `default`, is its limit, checked from Content-Length like the others."""

    def decorate(view):
        view.body_limit = (setting, default)
        return view

    return decorate


def too_large(limit: int) -> str:
    size = f"{limit // 1048576} MiB" if limit % 1048576 == 0 else f"{limit:,} bytes"
    return f"the request body is larger than the {size} limit"


@bp.before_app_request
def refuse_large_bodies():
    """Answer 413 from Content-Length before reading the body; drain it once the answer is
    sent, so a client that sends the body anyway reads the 413, not a reset connection."""
    custom = getattr(current_app.view_functions.get(request.endpoint), "body_limit", None)
    if custom is not None:
        request.max_content_length = current_app.config.get(*custom)
    length, limit = request.content_length, request.max_content_length
    if length is not None and length > limit:
        response = error_response(413, too_large(limit), headers={"Connection": "close"})
        response.call_on_close(partial(drain, request.environ["wsgi.input"], min(length, DRAIN_LIMIT)))
        return response


def drain(stream, remaining: int) -> None:
    """Read and discard what the client still sends of a refused body."""
    try:
        while remaining > 0:
            chunk = stream.read(min(65536, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
    except OSError:
        pass  # the client went away: nothing is left to protect


@bp.after_request
def no_store(response):
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def owned_config(owner_id: int, config_id: str):
    if not CONFIG_ID.match(config_id):
        raise ApiError(400, "modelConfigId is malformed", [detail("modelConfigId", "must be 1 to 64 characters of A-Z a-z 0-9 _ . -", "INVALID_ID")])
    row = get_db().execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": config_id}).fetchone()
    if row is None:
        raise ApiError(404, f"no model configuration {config_id!r}")
    return row


def config_json(row) -> dict:
    config = {
        "id": row["id"],
        "displayName": row["display_name"],
        "modelId": row["model_id"],
        "provider": row["provider"],
        "modelName": row["model_name"],
        "isDefault": False,
        "isEnabled": True,
        "settings": json.loads(row["settings"]),
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }
    if row["provider_key_id"] is not None:
        config["providerKeyId"] = row["provider_key_id"]
    return config


# --- reading usage ----------------------------------------------------------------


@bp.get("/v1/model-usage")
@requires_scope("read")
def model_usage():
    args = load_query(UsageQuerySchema)
    owner_id = current_owner_id()
    zone_name = args["timezone"] or current_app.config["DEFAULT_TIMEZONE"]
    zone = ZoneInfo(zone_name)
    start, end, period = resolve_dates(args["start_date"], args["end_date"], args["period"], local_today(zone, utc_now()))
    if start > end:  # only startDate, after today: the range it runs to today is empty
        raise ApiError(400, "startDate must not be after today when endDate is not given",
                       [detail("startDate", "must not be after today", "INVALID_RANGE",
                               "use a startDate on or before today, or send endDate too")])
    if args["granularity"] == "hour":
        lo, hi = local_midnight(start, zone), local_midnight(end + timedelta(days=1), zone)
        buckets = count_hour_buckets(lo, hi, zone, zone_name)
    else:
        buckets = count_buckets(start, end, args["granularity"])
    if buckets > MAX_BUCKETS:
        raise ApiError(
            400,
            f"the range would produce {buckets} time buckets, more than {MAX_BUCKETS}",
            [detail("granularity", f"range has {buckets} buckets, the limit is {MAX_BUCKETS}", "TOO_MANY_BUCKETS",
                    "use a coarser granularity or a shorter range")],
        )
    if args["model_config_id"] is not None:
        owned_config(owner_id, args["model_config_id"])
    query = reports.UsageQuery(owner_id, start, end, period, args["granularity"], zone_name, args["model_config_id"])
    db = get_db()
    csv = wants_csv()
    with read_snapshot(db):
        version, offsets = reports.snapshot_head(db, owner_id)
        render = partial(usage_csv, db, query) if csv else lambda: jsonify(
            reports.model_usage(db, query, current_app.config["DATA_SOURCE"], offsets))
        return conditional(db, owner_id, ["model-usage", tuple(vars(query).values()), csv], render, version)  # astuple, uncopied


@bp.get("/v1/model-usage/<path:config_id>")  # so a "/" in an id is a 400, not a 404
@requires_scope("read")
def model_usage_details(config_id):
    args = load_query(DetailsQuerySchema)
    owner_id = current_owner_id()
    config = owned_config(owner_id, config_id)
    db = get_db()
    csv = wants_csv()

    def render():
        rows = db.execute(queries.RECENT_EVENTS, {"owner_id": owner_id, "config_id": config_id, "limit": args["limit"]})
        return details_csv(config_id, rows) if csv else jsonify(details_json(config, rows))

    with read_snapshot(db):
        return conditional(db, owner_id, ["model-usage-details", config_id, args["limit"], csv], render)


def details_json(config, rows) -> dict:
    recent = [
        {
            "id": row["event_id"],
            "timestamp": iso_instant(row["ts_us"]),
            "completionTokens": row["completion_tokens"],
            "estimatedCost": micros_to_usd(row["cost_micros"]),
            "executionTime": None if row["execution_us"] is None else row["execution_us"] / 1_000_000,
            "promptTokens": row["prompt_tokens"],
            "totalTokens": row["total_tokens"],
            "billingSource": row["billing_source"],
            "priced": bool(row["priced"]),
            "priceSource": pricing.SOURCE_NAMES[row["price_source"]],
            "cachedPromptTokens": row["cached_prompt_tokens"],
            "cacheWriteTokens": row["cache_write_tokens"],
            "reasoningTokens": row["reasoning_tokens"],
        }
        for row in rows
    ]
    return {
        "meta": {"dataSource": current_app.config["DATA_SOURCE"]},
        "modelConfig": {
            "displayName": config["display_name"],
            "id": config["id"],
            "modelId": config["model_id"],
            "provider": config["provider"],
        },
        "recentUsage": recent,
    }


# --- model configurations ---------------------------------------------------------------


@bp.post("/v1/model-configs")
@requires_scope("write")
def create_model_config():
    data = load_body(ModelConfigSchema())
    owner_id = current_owner_id()
    db = get_db()
    model_name = data["model_name"] or pricing.model_name(db, data["model_id"], data["provider"])
    config_id = data["id"] or f"cfg_{secrets.token_hex(10)}"
    with write_transaction(db):
        inserted = db.execute(
            queries.INSERT_CONFIG,
            {
                "owner_id": owner_id,
                "id": config_id,
                "display_name": data["display_name"] or model_name,
                "model_id": data["model_id"],
                "provider": data["provider"],
                "model_name": model_name,
                "provider_key_id": data["provider_key_id"],
                "settings": json.dumps(data["settings"]),
                "created_at": now_iso(),
            },
        ).rowcount
    if not inserted:
        raise ApiError(409, f"a model configuration with id {config_id!r} already exists",
                       [detail("id", "is already in use", "DUPLICATE_ID", "choose another id or omit it")])
    row = db.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": config_id}).fetchone()
    return jsonify(config_json(row)), 201


@bp.get("/v1/model-configs")
@requires_scope("read")
def list_model_configs():
    load_query(EmptyQuerySchema)
    rows = get_db().execute(queries.LIST_CONFIGS, {"owner_id": current_owner_id()}).fetchall()
    return jsonify({"data": [config_json(row) for row in rows], "total": len(rows)})


@bp.get("/v1/model-configs/usage")
@requires_scope("read")
def model_configs_usage():
    load_query(EmptyQuerySchema)
    rows = get_db().execute(queries.CONFIG_USAGE, {"owner_id": current_owner_id()}).fetchall()
    data = [
        {
            "id": row["id"],
            "provider": row["provider"],
            "modelId": row["model_id"],
            "usageCount": row["usage_count"],
            "lastUsedAt": None if row["last_used_us"] is None else iso_instant(row["last_used_us"]),
        }
        for row in rows
    ]
    return jsonify({"data": data, "total": len(data)})


# --- recording usage ------------------------------------------------------------------------


@bp.post("/v1/model-usage/events")
@requires_scope("write")
def record_events():
    document = parse_body()
    events = fast_events(document)
    if events is None:  # not plainly valid: the schema accepts it or names every problem
        events = [NewEvent.from_loaded(item) for item in EventBatchSchema().load(document)["events"]]
    owner_id = current_owner_id()
    db = get_db()
    configs, unknown = {}, []
    for index, event in enumerate(events):
        if event.config_id not in configs:
            row = db.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": event.config_id}).fetchone()
            if row is None:
                unknown.append(detail(f"events.{index}.modelConfigId", "is not one of your model configurations",
                                      "UNKNOWN_MODEL_CONFIG", "create it with POST /v1/model-configs first"))
                continue
            configs[event.config_id] = row
    if unknown:
        raise ApiError(400, f"{unknown[0]['path']}: {unknown[0]['message']}", unknown)
    with write_transaction(db):
        result = store_events(db, owner_id, events, configs)
    record_stored(result.accepted, result.duplicates, result.conflicts)
    return jsonify({"accepted": result.accepted, "duplicates": result.duplicates, "conflicts": result.conflicts})


# --- operations ----------------------------------------------------------------------------


@bp.get("/health")
def health():
    """No auth: the engine's version and the settings in effect, 503 if the database is unusable."""
    db = get_db()
    status = engine_status(db)
    db.execute(queries.SCHEMA_READABLE).fetchone()
    return jsonify({"status": "ok", **status})
