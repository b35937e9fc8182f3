"""The OpenAPI 3 description, generated from the marshmallow schemas, served at /openapi.json.

Paths come from the app's own url_map, so a route without a description here is caught by
tests/test_openapi.py rather than silently missing from the document.
"""
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, jsonify

from . import __version__, budget_schemas, schemas
from .auth import KEY_PATTERN

bp = Blueprint("openapi", __name__)

UNDOCUMENTED = {"static", "docs.page", "dashboard.page"}  # pages for people and their assets, not the API
PATH_NAMES = {"config_id": "modelConfigId", "budget_id": "budgetId"}  # Flask variable -> the contract's parameter name
# What the date and instant fields accept, as patterns a generator can draw from: years from
# 1970 and field ranges spelled out (the server also checks the calendar and the upper bound).
YEAR, MONTH, DAY = "(19[7-9][0-9]|[2-9][0-9]{3})", "(0[1-9]|1[0-2])", "(0[1-9]|[12][0-9]|3[01])"
DATE_PATTERN = f"^{YEAR}-{MONTH}-{DAY}$"
INSTANT_PATTERN = (f"^{YEAR}-{MONTH}-{DAY}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                   r"(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$")
NO_STORE = {"Cache-Control": {"description": "tenant data is never cached", "required": True,
                              "schema": {"type": "string", "enum": ["no-store"]}}}
ETAG = {"ETag": {"description": "changes as soon as new usage of the owner is stored", "required": True,
                 "schema": {"type": "string"}}}
IF_NONE_MATCH = {"in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
                 "description": "an ETag from an earlier answer: 304 while it is still current"}
CSV_NOTE = " Answers `text/csv` instead when the request's Accept prefers it."

ERRORS = {
    400: ("BadRequest", "invalid parameters or body, or a key in the URL; `details` names each problem", {}),
    401: ("Unauthorized", "missing, malformed, unknown or revoked key (one identical answer for all)",
          {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}),
    403: ("Forbidden", "the key lacks the scope this operation needs", {}),
    404: ("NotFound", "no such model configuration (or budget) for this key's owner", {}),
    405: ("MethodNotAllowed", "the path does not take this method; `Allow` lists those it takes",
          {"Allow": {"required": True, "schema": {"type": "string"}}}),
    409: ("Conflict", "the owner already has a model configuration with this id", {}),
    413: ("PayloadTooLarge", "the body is over 2 MiB (answered from Content-Length)", {}),
    415: ("UnsupportedMediaType", "the body is neither application/x-protobuf nor application/json, or is "
          "compressed otherwise than gzip", {}),
    500: ("InternalError", "an unexpected failure; the body never shows internals", {}),
    503: ("ServiceUnavailable", "the database is busy, full, read-only or unusable; retry later",
          {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 0}}}),
}
READ = [400, 401, 403, 405, 413, 500, 503]
WRITE = [400, 401, 403, 405, 413, 500, 503]

OPERATIONS = {
    ("api.model_usage", "get"): {
        "summary": "Usage statistics over a range: summary, per model, time series",
        "description": "Scope: read. Without dates or period the range is `last_7_days`. Dates and "
                       "`period` exclude each other; `startDate` must not be after `endDate`; the range "
                       "may hold at most 10,000 buckets of the chosen granularity." + CSV_NOTE,
        "tags": ["usage"], "scope": "read",
        "parameters": [{"in": "query", "schema": schemas.UsageQuerySchema}],
        "ok": (200, "UsageReport"), "errors": READ + [404], "conditional": True,
    },
    ("api.model_usage_details", "get"): {
        "summary": "A model configuration's most recent usage events, newest first",
        "description": "Scope: read." + CSV_NOTE,
        "tags": ["usage"], "scope": "read",
        "parameters": [{"in": "query", "schema": schemas.DetailsQuerySchema}],
        "ok": (200, "UsageDetails"), "errors": READ + [404], "conditional": True,
    },
    ("api.record_events", "post"): {
        "summary": "Record a batch of usage events (all or nothing, exactly once per event id)",
        "description": "Scope: write. Each `modelConfigId` must be one of the owner's configurations. "
                       "An event whose id was already stored is skipped and counted in `duplicates` "
                       "(and in `conflicts` when its payload differs).",
        "tags": ["usage"], "scope": "write",
        "body": schemas.EventBatchSchema,
        "ok": (200, "IngestResult"), "errors": WRITE,
    },
    ("api.create_model_config", "post"): {
        "summary": "Create a model configuration",
        "description": "Scope: write. Without `id` the server makes one (`cfg_` + random).",
        "tags": ["model configurations"], "scope": "write",
        "body": schemas.ModelConfigSchema,
        "ok": (201, "ModelConfigOut"), "errors": WRITE + [409],
    },
    ("api.list_model_configs", "get"): {
        "summary": "The owner's model configurations",
        "description": "Scope: read.",
        "tags": ["model configurations"], "scope": "read",
        "ok": (200, "ModelConfigList"), "errors": READ,
    },
    ("api.model_configs_usage", "get"): {
        "summary": "Usage count and last use of each of the owner's model configurations",
        "description": "Scope: read.",
        "tags": ["model configurations"], "scope": "read",
        "ok": (200, "ConfigUsageList"), "errors": READ,
    },
    ("budgets.create", "post"): {
        "summary": "Create a budget: an amount per day, week or month, with threshold alerts",
        "description": "Scope: write. The answer alone holds `webhookSecret` when `webhookUrl` is given. "
                       "A webhook host that resolves to a loopback, private or link-local address is a 400 "
                       "unless listed in USAGE_SERVER_WEBHOOK_ALLOW.",
        "tags": ["budgets"], "scope": "write",
        "body": budget_schemas.BudgetSchema,
        "ok": (201, "BudgetOut"), "errors": WRITE,
    },
    ("budgets.list_all", "get"): {
        "summary": "The owner's budgets, each with its current period's spending",
        "description": "Scope: read.",
        "tags": ["budgets"], "scope": "read",
        "ok": (200, "BudgetList"), "errors": READ,
    },
    ("budgets.show", "get"): {
        "summary": "A budget with its current period's spending",
        "description": "Scope: read. Another owner's or an unknown id: 404.",
        "tags": ["budgets"], "scope": "read",
        "ok": (200, "BudgetOut"), "errors": READ + [404],
    },
    ("budgets.delete", "delete"): {
        "summary": "Delete a budget, its alerts and their pending deliveries",
        "description": "Scope: write. Another owner's or an unknown id: 404.",
        "tags": ["budgets"], "scope": "write",
        "ok": (204, None), "errors": WRITE + [404],
    },
    ("budgets.alerts", "get"): {
        "summary": "A budget's threshold alerts, newest first, with their webhook delivery state",
        "description": "Scope: read. Another owner's or an unknown id: 404.",
        "tags": ["budgets"], "scope": "read",
        "ok": (200, "AlertList"), "errors": READ + [404],
    },
    ("api.health", "get"): {
        "summary": "The storage engine, its version and the settings in effect; 503 when the database is unusable",
        "description": "No key needed.",
        "tags": ["operations"],
        "ok": (200, "Health"), "errors": [400, 405, 413, 500, 503],
    },
    ("otlp.export_traces", "post"): {
        "summary": "OpenTelemetry OTLP/HTTP trace export: gen-AI spans become usage events",
        "description": "Scope: write. An `ExportTraceServiceRequest` as protobuf or OTLP JSON, optionally "
                       "`Content-Encoding: gzip`, at most 32 MiB as sent and 64 MiB decompressed. A span that "
                       "names a model (`gen_ai.response.model` or `gen_ai.request.model`) and carries token "
                       "usage is one event, id `<traceId>:<spanId>`, counted once however often it is sent; "
                       "other spans are ignored. Spans that cannot be stored are counted in "
                       "`partialSuccess.rejectedSpans`. Answers in the request's encoding: a protobuf "
                       "request's errors are a `google.rpc.Status`. See docs/opentelemetry.md.",
        "tags": ["usage"], "scope": "write", "otlp": True,
        "ok": (200, "ExportTraceServiceResponse"), "errors": WRITE + [415],
    },
    ("openapi.document", "get"): {
        "summary": "This OpenAPI description",
        "description": "No key needed.",
        "tags": ["operations"],
        "ok": (200, None), "errors": [400, 405, 413],
    },
}

COMPONENTS = {
    "ModelConfig": schemas.ModelConfigSchema, "Event": schemas.EventSchema, "EventBatch": schemas.EventBatchSchema,
    "Error": schemas.ErrorSchema, "UsageReport": schemas.UsageReportSchema,
    "UsageDetails": schemas.UsageDetailsSchema, "ModelConfigOut": schemas.ModelConfigOutSchema,
    "ModelConfigList": schemas.ModelConfigListSchema, "ConfigUsageList": schemas.ConfigUsageListSchema,
    "IngestResult": schemas.IngestResultSchema, "Health": schemas.HealthSchema,
    "ExportTraceServiceResponse": schemas.ExportTraceServiceResponseSchema,
    "Budget": budget_schemas.BudgetSchema, "BudgetOut": budget_schemas.BudgetOutSchema,
    "BudgetList": budget_schemas.BudgetListSchema, "AlertList": budget_schemas.AlertListSchema,
}
PROTOBUF = {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}}
OTLP_BODY = {"required": True, "content": {
    **PROTOBUF, "application/json": {"schema": {"type": "object", "description": "OTLP JSON: hex ids, enums as integers"}}}}


def ecma_pattern(pattern: str) -> str:
    """Python's \\A...\\Z anchors, written as JSON Schema (ECMA-262) understands them."""
    return re.sub(r"\\Z$", "$", re.sub(r"^\\A", "^", pattern))


def custom_fields(self, field, ret=None, **kwargs) -> dict:
    """What the project's own field classes accept, as JSON Schema."""
    if isinstance(field, schemas.IsoDate):
        return {"type": "string", "format": "date", "pattern": DATE_PATTERN,
                "description": f"a date YYYY-MM-DD from {schemas.FIRST_DATE} to {schemas.LAST_DATE}"}
    if isinstance(field, schemas.Instant):
        return {"type": "string", "pattern": INSTANT_PATTERN,
                "description": "ISO 8601, e.g. 2024-06-01T14:22:00Z; without an offset it is UTC",
                "example": "2024-06-01T14:22:00Z"}
    if isinstance(field, schemas.StrictNumber):
        return {"type": "number", "minimum": 0, "maximum": field.maximum}
    if isinstance(field, budget_schemas.Amount):
        return {"type": "number", "minimum": 0.000001, "maximum": budget_schemas.MAX_AMOUNT_USD}
    if isinstance(field, budget_schemas.WebhookUrl):
        return {"type": "string", "maxLength": budget_schemas.MAX_URL, "example": "https://example.com/hooks/budget",
                "description": "http(s) URL with a host, no credentials; a host resolving to a loopback, private "
                               "or link-local address is refused unless listed in USAGE_SERVER_WEBHOOK_ALLOW"}
    if isinstance(field, schemas.ZoneName):
        return {"enum": sorted(schemas.available_zone_names()), "example": "America/Los_Angeles"}
    if "pattern" in (ret or {}):
        return {"pattern": ecma_pattern(ret["pattern"])}
    return {}


def error_responses(spec: APISpec) -> None:
    for status, (name, description, headers) in ERRORS.items():
        spec.components.response(name, {
            "description": description,
            "headers": {**headers, **NO_STORE},
            "content": {"application/json": {"schema": "Error"}},
        })


def operation(doc: dict, path_params: list[str]) -> dict:
    """One operation object: parameters, body, the success answer and every error it can give."""
    status, schema = doc["ok"]
    ok = {"description": "success"}
    if status == 204:
        pass  # no body
    elif schema is None:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    else:
        ok["content"] = {"application/json": {"schema": schema}}
    if "scope" in doc:
        ok["headers"] = NO_STORE
    responses = {str(status): ok}
    parameters = [path_parameter(name) for name in path_params] + doc.get("parameters", [])
    if doc.get("conditional"):
        ok["content"]["text/csv"] = {"schema": {"type": "string"}}
        ok["headers"] = {**NO_STORE, **ETAG}
        responses["304"] = {"description": "If-None-Match holds the current ETag: nothing changed",
                            "headers": {**NO_STORE, **ETAG}}
        parameters.append(IF_NONE_MATCH)
    result = {
        "summary": doc["summary"], "description": doc["description"], "tags": doc["tags"],
        "operationId": doc.get("operationId"),
        "parameters": parameters,
        "responses": {**responses, **{str(code): ERRORS[code][0] for code in sorted(doc["errors"])}},
        "security": [{"bearerAuth": []}] if "scope" in doc else [],
    }
    if "body" in doc:
        result["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc["body"]}}}
    if doc.get("otlp"):  # protobuf in and out; errors too, as google.rpc.Status, for protobuf requests
        result["requestBody"] = OTLP_BODY
        ok["content"].update(PROTOBUF)
        for code in doc["errors"]:
            name, description, headers = ERRORS[code]
            result["responses"][str(code)] = {"description": description, "headers": {**headers, **NO_STORE},
                                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                                                          **PROTOBUF}}
    return {key: value for key, value in result.items() if value is not None}


def path_parameter(name: str) -> dict:
    return {"in": "path", "name": name, "required": True,
            "schema": {"type": "string", "pattern": ecma_pattern(schemas.CONFIG_ID.pattern)}}


def openapi_path(rule) -> tuple[str, list[str]]:
    """/v1/model-usage/<config_id> -> (/v1/model-usage/{modelConfigId}, [modelConfigId])."""
    names = []

    def rename(match):
        names.append(PATH_NAMES.get(match.group(1), match.group(1)))
        return "{" + names[-1] + "}"

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", rename, rule.rule), names


def build_spec(app) -> dict:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="usage_server",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={
            "description": "Self-hosted LLM usage and cost analytics. Money is US dollars (6 decimals). "
                           "Instants are ISO 8601 and stored in UTC; usage is bucketed in UTC unless a "
                           "request names an IANA `timezone`. Every error has the shape of `Error`.",
            "license": {"name": "MIT"},
        },
    )
    plugin.converter.add_attribute_function(custom_fields)
    for tag in ("usage", "model configurations", "budgets", "operations"):
        spec.tag({"name": tag})
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "bearerFormat": "usk_<id>_<secret>",
        "description": f"`Authorization: Bearer <key>` (or the bare key); never in the URL, where a "
                       f"key-like parameter is a 400. Keys match `{KEY_PATTERN.pattern}`.",
    })
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    error_responses(spec)
    for path, operations in sorted(path_items(app).items()):
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for path_item in document["paths"].values():
        for op in path_item.values():
            for parameter in op["parameters"]:
                parameter["schema"].pop("nullable", None)  # a query string has no null: absent it is
    drop_null_defaults(document)
    return document


def path_items(app) -> dict:
    """Every documented (path, method) the app answers, once each, from its url_map."""
    items = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED:
            continue
        path, names = openapi_path(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            items.setdefault(path, {})[method.lower()] = operation(OPERATIONS[(rule.endpoint, method.lower())], names)
    return items


def drop_null_defaults(node) -> None:
    """marshmallow's load_default=None means "absent", not a null to document."""
    if isinstance(node, dict):
        if "default" in node and node["default"] is None:
            del node["default"]
            if "enum" in node and not node.get("nullable"):
                node["enum"] = [value for value in node["enum"] if value is not None]
        for value in node.values():
            drop_null_defaults(value)
    elif isinstance(node, list):
        for value in node:
            drop_null_defaults(value)


@bp.get("/openapi.json")
def document():
    """No auth: the description is built once per app, from the routes it really has."""
    spec = current_app.extensions.get("openapi")
    if spec is None:
        spec = current_app.extensions["openapi"] = build_spec(current_app)
    return jsonify(spec)
