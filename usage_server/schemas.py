"""marshmallow schemas for every query string and body. Unknown keys are errors.

Custom messages read "CODE|message|suggestion" (see errors.validation_details).
"""
import math
import re
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import available_timezones

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from .timeranges import GRANULARITIES, PERIODS

CONFIG_ID = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")
EVENT_ID = re.compile(r"\A[A-Za-z0-9_.:-]{1,128}\Z")
# ISO 8601 extended date and time, optional fraction and offset: the one grammar documented
INSTANT_PATTERN = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?\Z")
MAX_TOKENS = 10**12  # per field and event: keeps every sum far inside 64 bits
MAX_COST_USD = 10**6
MAX_EXECUTION_SECONDS = 10**7
FIRST_DATE, LAST_DATE = date(1970, 1, 1), date(9999, 12, 30)
MIN_INSTANT = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)  # the last one readable back
MAX_SETTINGS_DEPTH = 32


def one_of(choices):
    return validate.OneOf(choices, error="INVALID_VALUE|must be one of: {choices}|use one of: {choices}")


class IsoDate(fields.Field):
    """A calendar date written exactly YYYY-MM-DD."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValidationError("INVALID_DATE|must be a date written YYYY-MM-DD|e.g. 2024-06-01")
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValidationError("INVALID_DATE|is not a real calendar date|e.g. 2024-06-01") from None
        if not FIRST_DATE <= day <= LAST_DATE:
            raise ValidationError(f"OUT_OF_RANGE|must be between {FIRST_DATE} and {LAST_DATE}")
        return day


class ZoneName(fields.String):
    """An IANA time-zone name, returned as given."""

    def _deserialize(self, value, attr, data, **kwargs):
        name = super()._deserialize(value, attr, data, **kwargs)
        if name not in available_zone_names():
            raise ValidationError("UNKNOWN_TIMEZONE|is not a known IANA time zone|e.g. UTC, America/Los_Angeles")
        return name


_ZONES: set[str] = set()


def available_zone_names() -> set[str]:
    """IANA names; not `localtime`, a link some systems add to their own zone, whatever it is."""
    if not _ZONES:
        _ZONES.update(available_timezones() - {"localtime", "posixrules"})
        _ZONES.add("UTC")
    return _ZONES


class StrictSchema(Schema):
    """Unknown keys are errors that list what is accepted, in the style of every other 400."""

    what = "field"  # the word for this schema's keys in the unknown-key message

    class Meta:
        unknown = RAISE

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        accepted = ", ".join(field.data_key or name for name, field in self.load_fields.items())
        self.error_messages = {
            **self.error_messages,
            "unknown": f"UNKNOWN_FIELD|is not an accepted {self.what}|use one of: {accepted}"
            if accepted else f"UNKNOWN_FIELD|is not an accepted {self.what}|send none",
        }


class QuerySchema(StrictSchema):
    what = "query parameter"


config_id_field = dict(
    validate=validate.Regexp(CONFIG_ID, error="INVALID_ID|must be 1 to 64 characters of A-Z a-z 0-9 _ . -")
)


class UsageQuerySchema(QuerySchema):
    start_date = IsoDate(data_key="startDate", load_default=None)
    end_date = IsoDate(data_key="endDate", load_default=None)
    period = fields.String(load_default=None, validate=one_of(PERIODS))
    granularity = fields.String(load_default="day", validate=one_of(GRANULARITIES))
    model_config_id = fields.String(data_key="modelConfigId", load_default=None, **config_id_field)
    timezone = ZoneName(load_default=None)

    @validates_schema
    def check_range(self, data, **kwargs):
        if data["period"] and (data["start_date"] or data["end_date"]):
            raise ValidationError(
                "CONFLICTING_PARAMETERS|cannot be combined with startDate or endDate|"
                "send either period or startDate/endDate",
                "period",
            )
        if data["start_date"] and data["end_date"] and data["start_date"] > data["end_date"]:
            raise ValidationError(
                "INVALID_RANGE|must not be after endDate|use a startDate on or before endDate", "startDate"
            )


class DetailsQuerySchema(QuerySchema):
    limit = fields.Integer(
        load_default=50,
        validate=validate.Range(1, 1000, error="OUT_OF_RANGE|must be between 1 and 1000|use 1 to 1000"),
        error_messages={"invalid": "INVALID_TYPE|must be a whole number|use 1 to 1000"},
    )


class EmptyQuerySchema(QuerySchema):
    """Endpoints that take no query parameters."""


# --- the common case without marshmallow ----------------------------------------------
# A query string that is plainly valid is loaded by these, with the schemas' own rules, in a
# fraction of the time; anything else (None) goes through the schema, which names every
# problem. Each gives exactly what its schema would, or None.

PLAIN_DATE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
PLAIN_LIMIT = re.compile(r"\A[0-9]{1,4}\Z")
USAGE_PARAMETERS = frozenset(("startDate", "endDate", "period", "granularity", "modelConfigId", "timezone"))


def plain_date(text: str | None) -> date | None | bool:
    """A valid date, None when not given, False when the schema must look at it."""
    if text is None:
        return None
    if not PLAIN_DATE.match(text):
        return False
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return False
    return day if FIRST_DATE <= day <= LAST_DATE else False


def plain_usage_query(args: dict) -> dict | None:
    """UsageQuerySchema's result for a plainly valid query, else None."""
    if not args.keys() <= USAGE_PARAMETERS:
        return None
    start, end = plain_date(args.get("startDate")), plain_date(args.get("endDate"))
    period, granularity = args.get("period"), args.get("granularity", "day")
    config_id, zone = args.get("modelConfigId"), args.get("timezone")
    if (start is False or end is False or granularity not in GRANULARITIES
            or (period is not None and (period not in PERIODS or start or end))
            or (start and end and start > end)
            or (config_id is not None and not CONFIG_ID.match(config_id))
            or (zone is not None and zone not in available_zone_names())):
        return None
    return {"start_date": start, "end_date": end, "period": period, "granularity": granularity,
            "model_config_id": config_id, "timezone": zone}


def plain_details_query(args: dict) -> dict | None:
    """DetailsQuerySchema's result for a plainly valid query, else None."""
    limit = args.get("limit", "50")
    if not args.keys() <= {"limit"} or not PLAIN_LIMIT.match(limit) or not 1 <= int(limit) <= 1000:
        return None
    return {"limit": int(limit)}


def plain_empty_query(args: dict) -> dict | None:
    return None if args else {}


PLAIN_QUERIES = {UsageQuerySchema: plain_usage_query, DetailsQuerySchema: plain_details_query,
                 EmptyQuerySchema: plain_empty_query}


class Settings(fields.Dict):
    """A free-form JSON object, stored and echoed back: bounded depth, numbers as finite floats."""

    def _deserialize(self, value, attr, data, **kwargs):
        return plain_json(super()._deserialize(value, attr, data, **kwargs))


def plain_json(value, depth=1):
    """Decimals (from the strict parser) to floats, so the value can be written back as JSON."""
    if depth > MAX_SETTINGS_DEPTH:
        raise ValidationError(f"TOO_DEEP|must not nest more than {MAX_SETTINGS_DEPTH} levels")
    if isinstance(value, dict):
        return {key: plain_json(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_json(item, depth + 1) for item in value]
    if isinstance(value, Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise ValidationError("OUT_OF_RANGE|numbers must fit a 64-bit float")
        return number
    return value


class ModelConfigSchema(StrictSchema):
    """Body of POST /v1/model-configs (the reference client's own body works too)."""

    id = fields.String(load_default=None, **config_id_field)
    display_name = fields.String(data_key="displayName", load_default=None, validate=validate.Length(1, 200))
    model_id = fields.String(data_key="modelId", required=True, validate=validate.Length(1, 128))
    provider = fields.String(required=True, validate=validate.Length(1, 128))
    model_name = fields.String(data_key="modelName", load_default=None, validate=validate.Length(1, 200))
    provider_key_id = fields.String(data_key="providerKeyId", load_default=None, validate=validate.Length(1, 200))
    settings = Settings(keys=fields.String(), load_default=dict)


class StrictNumber(fields.Field):
    """A JSON number (int or decimal), never a string or a boolean, finite, in range."""

    def __init__(self, maximum, **kwargs):
        super().__init__(**kwargs)
        self.maximum = maximum

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise ValidationError("INVALID_TYPE|must be a JSON number")
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValidationError("INVALID_TYPE|must be a finite number")
        if value < 0 or value > self.maximum:
            raise ValidationError(f"OUT_OF_RANGE|must be between 0 and {self.maximum}")
        return Decimal(value)


class Instant(fields.Field):
    """An ISO 8601 timestamp; no offset means UTC. Loads as UTC epoch microseconds."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("INVALID_TYPE|must be an ISO 8601 string|e.g. 2024-06-01T14:22:00Z")
        if not INSTANT_PATTERN.match(value):
            raise ValidationError("INVALID_TIMESTAMP|is not an ISO 8601 timestamp|e.g. 2024-06-01T14:22:00Z")
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError("INVALID_TIMESTAMP|is not an ISO 8601 timestamp|e.g. 2024-06-01T14:22:00Z") from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=timezone.utc)
        if not MIN_INSTANT <= instant <= MAX_INSTANT:
            raise ValidationError("OUT_OF_RANGE|must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
        delta = instant - MIN_INSTANT
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# JSON types are strict: null is no value of any event field (leave an optional one out)
NOT_NULL = {"null": "INVALID_TYPE|must not be null|leave an optional field out instead"}


def token_count(**kwargs):
    return fields.Integer(
        strict=True,
        validate=validate.Range(0, MAX_TOKENS, error=f"OUT_OF_RANGE|must be between 0 and {MAX_TOKENS}"),
        error_messages={"invalid": "INVALID_TYPE|must be a JSON integer", **NOT_NULL},
        **kwargs,
    )


class EventSchema(StrictSchema):
    id = fields.String(
        required=True,
        validate=validate.Regexp(EVENT_ID, error="INVALID_ID|must be 1 to 128 characters of A-Z a-z 0-9 _ . : -"),
        error_messages=NOT_NULL,
    )
    timestamp = Instant(required=True, error_messages=NOT_NULL)
    model_config_id = fields.String(data_key="modelConfigId", required=True, error_messages=NOT_NULL, **config_id_field)
    prompt_tokens = token_count(data_key="promptTokens", required=True)
    completion_tokens = token_count(data_key="completionTokens", required=True)
    total_tokens = token_count(data_key="totalTokens", load_default=None, allow_none=False)
    cost = StrictNumber(MAX_COST_USD, load_default=None, allow_none=False, error_messages=NOT_NULL)
    execution_time = StrictNumber(MAX_EXECUTION_SECONDS, data_key="executionTime", load_default=None, allow_none=False,
                                  error_messages=NOT_NULL)
    billing_source = fields.String(data_key="billingSource", load_default="platform", validate=one_of(("platform", "user")),
                                   error_messages=NOT_NULL)
    cached_prompt_tokens = token_count(data_key="cachedPromptTokens", load_default=0, allow_none=False,
                                       metadata={"description": "prompt tokens read from the provider's prompt cache; "
                                                                "part of promptTokens"})
    cache_write_tokens = token_count(data_key="cacheWriteTokens", load_default=0, allow_none=False,
                                     metadata={"description": "prompt tokens written to the provider's prompt cache; "
                                                              "part of promptTokens"})
    reasoning_tokens = token_count(data_key="reasoningTokens", load_default=0, allow_none=False,
                                   metadata={"description": "part of completionTokens"})

    @validates_schema(pass_original=True)
    def check_token_details(self, data, original, **kwargs):
        """The details are parts of the counts they detail (checked once every field is valid)."""
        problems = {}
        cache = data["cached_prompt_tokens"] + data["cache_write_tokens"]
        if cache > data["prompt_tokens"]:
            field = "cachedPromptTokens" if "cachedPromptTokens" in original else "cacheWriteTokens"
            problems[field] = [f"TOKENS_EXCEED_PROMPT|cachedPromptTokens + cacheWriteTokens ({cache}) must not exceed "
                               f"promptTokens ({data['prompt_tokens']})|count every input token in promptTokens, "
                               "cached or not"]
        if data["reasoning_tokens"] > data["completion_tokens"]:
            problems["reasoningTokens"] = [f"TOKENS_EXCEED_COMPLETION|reasoningTokens ({data['reasoning_tokens']}) must "
                                           f"not exceed completionTokens ({data['completion_tokens']})|count reasoning "
                                           "tokens in completionTokens too"]
        if problems:
            raise ValidationError(problems)


class EventBatchSchema(StrictSchema):
    events = fields.List(
        fields.Nested(EventSchema),
        required=True,
        validate=validate.Length(1, 1000, error="BATCH_SIZE|must hold 1 to 1000 events|split larger batches"),
    )


# --- answers (documentation only: the OpenAPI description is generated from these) ---


class Answer(Schema):
    """An answer's documented fields; clients must accept fields added later."""

    class Meta:
        unknown = INCLUDE


class ErrorDetailSchema(Answer):
    code = fields.String(metadata={"description": "stable upper-case code, e.g. INVALID_RANGE"})
    message = fields.String(required=True)
    path = fields.String(required=True, metadata={"description": "query parameter, or dotted JSON path into the body"})
    suggestion = fields.String(metadata={"description": "allowed values or accepted range"})


class ErrorSchema(Answer):
    error = fields.String(required=True, metadata={"description": "a sentence for people"})
    code = fields.String(required=True, metadata={"description": "stable snake_case word, e.g. invalid_request"})
    details = fields.List(fields.Nested(ErrorDetailSchema))


class UsageMetaSchema(Answer):
    start_date = fields.Date(data_key="startDate", required=True)
    end_date = fields.Date(data_key="endDate", required=True)
    data_source = fields.String(data_key="dataSource", required=True)
    granularity = fields.String(required=True, validate=validate.OneOf(GRANULARITIES))
    period = fields.String(required=True, validate=validate.OneOf(PERIODS + ("custom",)))
    timezone = fields.String(required=True)
    unpriced_requests = fields.Integer(
        data_key="unpricedRequests", metadata={"description": "requests with no cost given and no catalogue price"}
    )


class UsageSummarySchema(Answer):
    total_cost = fields.Float(data_key="totalCost", required=True)
    total_requests = fields.Integer(data_key="totalRequests", required=True)
    total_tokens = fields.Integer(data_key="totalTokens", required=True)
    platform_cost = fields.Float(data_key="platformCost", required=True)
    platform_tokens = fields.Integer(data_key="platformTokens", required=True)
    user_cost = fields.Float(data_key="userCost", required=True)
    user_tokens = fields.Integer(data_key="userTokens", required=True)
    cached_prompt_tokens = fields.Integer(data_key="cachedPromptTokens",
                                          metadata={"description": "of the prompt tokens, those read from a prompt cache"})
    reasoning_tokens = fields.Integer(data_key="reasoningTokens",
                                      metadata={"description": "of the completion tokens, those spent on reasoning"})
    prompt_tokens = fields.Integer(data_key="promptTokens", metadata={
        "description": "every input token, cached or not: the cache hit rate is cachedPromptTokens ÷ promptTokens"})


class ModelUsageSchema(Answer):
    avg_cost_per_request = fields.Float(data_key="avgCostPerRequest", required=True)
    model_id = fields.String(data_key="modelId", required=True)
    provider = fields.String(required=True)
    request_count = fields.Integer(data_key="requestCount", required=True)
    total_cost = fields.Float(data_key="totalCost", required=True)
    total_tokens = fields.Integer(data_key="totalTokens", required=True)
    model_name = fields.String(data_key="modelName", required=True)
    unpriced_requests = fields.Integer(
        data_key="unpricedRequests", required=True,
        metadata={"description": "of requestCount, those with no price, counted as $0"},
    )
    cached_prompt_tokens = fields.Integer(data_key="cachedPromptTokens",
                                          metadata={"description": "of the prompt tokens, those read from a prompt cache"})
    prompt_tokens = fields.Integer(data_key="promptTokens", metadata={
        "description": "every input token, cached or not: the cache hit rate is cachedPromptTokens ÷ promptTokens"})


class TimeSeriesPointSchema(Answer):
    date = fields.String(
        required=True,
        metadata={"description": "the bucket's start: YYYY-MM-DD, or YYYY-MM-DDTHH:00:00Z (or ±HH:MM) for hours"},
    )
    cost = fields.Float(required=True)
    requests = fields.Integer(required=True)
    tokens = fields.Integer(required=True)


class UsageReportSchema(Answer):
    meta = fields.Nested(UsageMetaSchema, required=True)
    summary = fields.Nested(UsageSummarySchema, required=True)
    usage_by_model = fields.Dict(
        data_key="usageByModel", keys=fields.String(), values=fields.Nested(ModelUsageSchema), required=True,
        metadata={"description": "keyed by modelId, ordered by totalCost descending"},
    )
    time_series = fields.List(fields.Nested(TimeSeriesPointSchema), data_key="timeSeries", required=True)


class RecentUsageSchema(Answer):
    id = fields.String(required=True)
    timestamp = fields.String(required=True, metadata={"description": "ISO 8601 instant in UTC, with Z"})
    completion_tokens = fields.Integer(data_key="completionTokens", required=True)
    estimated_cost = fields.Float(data_key="estimatedCost", required=True)
    execution_time = fields.Float(data_key="executionTime", required=True, allow_none=True,
                                  metadata={"description": "seconds"})
    prompt_tokens = fields.Integer(data_key="promptTokens", required=True)
    total_tokens = fields.Integer(data_key="totalTokens", required=True)
    billing_source = fields.String(data_key="billingSource", validate=validate.OneOf(("platform", "user")))
    priced = fields.Boolean(metadata={"description": "false when no cost was given and no catalogue price applied"})
    price_source = fields.String(
        data_key="priceSource", required=True, validate=validate.OneOf(("sent", "override", "catalogue", "none")),
        metadata={"description": "where the cost comes from: sent with the event, the operator's price "
                                 "(import-prices), the genai-prices catalogue at the event's time, or none (unpriced, $0)"})
    cached_prompt_tokens = fields.Integer(data_key="cachedPromptTokens",
                                          metadata={"description": "of promptTokens, read from a prompt cache (0 if not sent)"})
    cache_write_tokens = fields.Integer(data_key="cacheWriteTokens",
                                        metadata={"description": "of promptTokens, written to a prompt cache (0 if not sent)"})
    reasoning_tokens = fields.Integer(data_key="reasoningTokens",
                                      metadata={"description": "of completionTokens, spent on reasoning (0 if not sent)"})


class ConfigRefSchema(Answer):
    display_name = fields.String(data_key="displayName", required=True)
    id = fields.String(required=True)
    model_id = fields.String(data_key="modelId", required=True)
    provider = fields.String(required=True)


class DataSourceSchema(Answer):
    data_source = fields.String(data_key="dataSource", required=True)


class UsageDetailsSchema(Answer):
    meta = fields.Nested(DataSourceSchema, required=True)
    model_config = fields.Nested(ConfigRefSchema, data_key="modelConfig", required=True)
    recent_usage = fields.List(fields.Nested(RecentUsageSchema), data_key="recentUsage", required=True,
                               metadata={"description": "newest first, at most `limit`"})


class ModelConfigOutSchema(Answer):
    id = fields.String(required=True)
    display_name = fields.String(data_key="displayName", required=True)
    model_id = fields.String(data_key="modelId", required=True)
    provider = fields.String(required=True)
    model_name = fields.String(data_key="modelName", required=True)
    provider_key_id = fields.String(data_key="providerKeyId")
    is_default = fields.Boolean(data_key="isDefault", required=True)
    is_enabled = fields.Boolean(data_key="isEnabled", required=True)
    settings = fields.Dict(required=True)
    created_at = fields.String(data_key="createdAt", required=True)
    updated_at = fields.String(data_key="updatedAt", required=True)


class ModelConfigListSchema(Answer):
    data = fields.List(fields.Nested(ModelConfigOutSchema), required=True)
    total = fields.Integer(required=True)


class ConfigUsageSchema(Answer):
    id = fields.String()
    provider = fields.String(required=True)
    model_id = fields.String(data_key="modelId", required=True)
    usage_count = fields.Integer(data_key="usageCount", required=True)
    last_used_at = fields.String(data_key="lastUsedAt", required=True, allow_none=True)


class ConfigUsageListSchema(Answer):
    data = fields.List(fields.Nested(ConfigUsageSchema), required=True)
    total = fields.Integer(required=True)


class IngestResultSchema(Answer):
    accepted = fields.Integer(required=True, metadata={"description": "events stored by this batch"})
    duplicates = fields.Integer(required=True, metadata={"description": "events skipped: id already stored"})
    conflicts = fields.Integer(required=True, metadata={"description": "duplicates whose payload differs"})


class HealthSchema(Answer):
    status = fields.String(required=True)
    engine = fields.String(required=True, metadata={"description": "`sqlite` or `postgresql`"})
    version = fields.String(required=True, metadata={"description": "the engine's version"})
    sqlite_version = fields.String(data_key="sqliteVersion", metadata={"description": "SQLite only"})
    pragmas = fields.Dict(metadata={"description": "SQLite only: the connection's pragmas in effect"})
    settings = fields.Dict(metadata={"description": "PostgreSQL only: the session's settings in effect"})


class PartialSuccessSchema(Answer):
    rejected_spans = fields.String(data_key="rejectedSpans", metadata={"description": "an int64, as OTLP JSON writes it"})
    error_message = fields.String(data_key="errorMessage")


class ExportTraceServiceResponseSchema(Answer):
    partial_success = fields.Nested(PartialSuccessSchema, data_key="partialSuccess")
