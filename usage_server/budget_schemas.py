"""marshmallow schemas of the budget endpoints: the POST body, and the answers (for the
OpenAPI description). Custom messages read "CODE|message|suggestion" as in schemas.py."""
from decimal import Decimal
from urllib.parse import urlsplit

from marshmallow import ValidationError, fields, validate

from .schemas import Answer, StrictSchema, ZoneName, config_id_field, one_of

PERIODS = ("day", "week", "month")
MAX_AMOUNT_USD = 10**9
MAX_THRESHOLDS = 20
DEFAULT_THRESHOLDS = (50, 80, 100)
MAX_URL = 2048


class Amount(fields.Field):
    """A JSON number of dollars > 0 (at least one micro-dollar), never a string or a boolean."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise ValidationError("INVALID_TYPE|must be a JSON number")
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValidationError("INVALID_TYPE|must be a finite number")
        if not Decimal("0.000001") <= value <= MAX_AMOUNT_USD:
            raise ValidationError(f"OUT_OF_RANGE|must be more than 0 (at least 0.000001) and at most {MAX_AMOUNT_USD}")
        return Decimal(value)


class Thresholds(fields.List):
    """Whole percents 1 to 1000, returned ascending without repeats."""

    def __init__(self, **kwargs):
        super().__init__(fields.Integer(strict=True, validate=validate.Range(
            1, 1000, error="OUT_OF_RANGE|must be a whole percent from 1 to 1000")), validate=validate.Length(
            1, MAX_THRESHOLDS, error=f"INVALID_LENGTH|must hold 1 to {MAX_THRESHOLDS} thresholds"), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return sorted(set(super()._deserialize(value, attr, data, **kwargs)))


class WebhookUrl(fields.String):
    """An absolute http(s) URL with a host, without credentials or a fragment."""

    def _deserialize(self, value, attr, data, **kwargs):
        url = super()._deserialize(value, attr, data, **kwargs)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            parts = None
        if (parts is None or len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname
                or parts.username is not None or parts.fragment or any(c.isspace() for c in url)):
            raise ValidationError("INVALID_URL|must be an http:// or https:// URL with a host, "
                                  f"without credentials, at most {MAX_URL} characters|e.g. https://example.com/hooks/budget")
        return url


class BudgetSchema(StrictSchema):
    """Body of POST /v1/budgets."""

    name = fields.String(required=True, validate=validate.Length(1, 200, error="INVALID_LENGTH|must be 1 to 200 characters"))
    amount = Amount(required=True, metadata={"description": "US dollars, more than 0"})
    period = fields.String(required=True, validate=one_of(PERIODS))
    timezone = ZoneName(load_default=None, metadata={"description": "default: the server's default zone"})
    model_config_id = fields.String(data_key="modelConfigId", load_default=None, **config_id_field)
    thresholds = Thresholds(load_default=lambda: list(DEFAULT_THRESHOLDS),
                            metadata={"description": "percents of amount, 1 to 1000; default [50, 80, 100]"})
    webhook_url = WebhookUrl(data_key="webhookUrl", load_default=None)


# --- answers -------------------------------------------------------------------------------


class BudgetCurrentSchema(Answer):
    start = fields.String(required=True, metadata={"description": "the current period's first instant (local midnight)"})
    end = fields.String(required=True, metadata={"description": "the next period's first instant (exclusive)"})
    spent = fields.Float(required=True, metadata={"description": "as GET /v1/model-usage totals the period"})
    remaining = fields.Float(required=True, metadata={"description": "amount - spent; negative when over"})
    percent_used = fields.Float(data_key="percentUsed", required=True)
    forecast = fields.Float(required=True, metadata={"description": "spent / elapsed time x the period's length"})
    crossed = fields.List(fields.Integer(), required=True, metadata={"description": "thresholds reached this period"})


class BudgetOutSchema(Answer):
    id = fields.String(required=True)
    name = fields.String(required=True)
    amount = fields.Float(required=True)
    period = fields.String(required=True, validate=validate.OneOf(PERIODS))
    timezone = fields.String(required=True)
    model_config_id = fields.String(data_key="modelConfigId", required=True, allow_none=True)
    thresholds = fields.List(fields.Integer(), required=True)
    webhook_url = fields.String(data_key="webhookUrl", required=True, allow_none=True)
    webhook_secret = fields.String(data_key="webhookSecret",
                                   metadata={"description": "only in the answer to the POST that made it"})
    created_at = fields.String(data_key="createdAt", required=True)
    current = fields.Nested(BudgetCurrentSchema, required=True)


class BudgetListSchema(Answer):
    data = fields.List(fields.Nested(BudgetOutSchema), required=True)
    total = fields.Integer(required=True)


class DeliverySchema(Answer):
    state = fields.String(required=True, validate=validate.OneOf(("pending", "delivered", "failed")))
    attempts = fields.Integer(required=True)
    last_error = fields.String(data_key="lastError", required=True, allow_none=True)
    delivered_at = fields.String(data_key="deliveredAt", required=True, allow_none=True)


class AlertSchema(Answer):
    id = fields.String(required=True)
    threshold = fields.Integer(required=True)
    period_start = fields.String(data_key="periodStart", required=True)
    spent = fields.Float(required=True)
    crossed_at = fields.String(data_key="crossedAt", required=True)
    delivery = fields.Nested(DeliverySchema, required=True, allow_none=True,
                             metadata={"description": "null when the budget has no webhook"})


class AlertListSchema(Answer):
    data = fields.List(fields.Nested(AlertSchema), required=True, metadata={"description": "newest first"})
    total = fields.Integer(required=True)
