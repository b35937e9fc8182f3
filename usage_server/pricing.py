"""Prices of events sent without a cost: the operator's overrides, then the catalogue.

Order (docs/pricing.md): a cost sent with the event > the operator's price for its model
(the `model` table, filled by `usage-server import-prices`) > the `genai-prices` package's
catalogue at the event's timestamp > none (unpriced, $0).

The catalogue is the data shipped inside the installed package, read through a snapshot of
our own: the package's auto-update (UpdatePrices) is never started, and a snapshot another
library might install process-wide is never consulted, so pricing never touches the network
and changes only when the package is upgraded.

Costs are exact: every rate is turned once into an integer (micro-dollars per token times
10**scale), an event's cost is an integer sum, divided by 10**scale and rounded once, half
up, to the micro-dollar the server stores.
"""
import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from genai_prices import data as catalogue_data
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import ModelPrice, StartDateConstraint, TieredPrices
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from . import queries
from .money import usd_to_micros
from .storage import Connection

MAX_PRICE = 10**6  # USD per million tokens

# priceSource, as stored (usage_event.price_source) and as answered
NONE, SENT, OVERRIDE, CATALOGUE = 0, 1, 2, 3
SOURCE_NAMES = {NONE: "none", SENT: "sent", OVERRIDE: "override", CATALOGUE: "catalogue"}


# --- exact costs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """One price list as integers: micro-dollars per token (= USD per million tokens) times
    10**scale. A cache rate or the reasoning rate of None prices those tokens as the tokens
    they are part of (prompt, completion), as the catalogue does when it lists no such rate."""

    scale: int
    prompt: int
    completion: int
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None
    request: int = 0  # a fee per request, micro-dollars times 10**scale

    def cost(self, prompt: int, completion: int, cached: int = 0, written: int = 0, reasoning: int = 0) -> int:
        """Micro-dollars, rounded once, half up. `prompt` counts every input token (cached and
        written included), `completion` every output token (reasoning included)."""
        total = self.request
        if self.cache_read is not None:
            total += cached * self.cache_read
            prompt -= cached
        if self.cache_write is not None:
            total += written * self.cache_write
            prompt -= written
        if self.reasoning is not None:
            total += reasoning * self.reasoning
            completion -= reasoning
        total += prompt * self.prompt + completion * self.completion
        if not self.scale:
            return total
        unit = 10**self.scale
        return (total + unit // 2) // unit


def decimals(value: Decimal) -> int:
    return max(0, -value.as_tuple().exponent)


def scaled(value: Decimal | None, scale: int) -> int | None:
    return None if value is None else int(value.scaleb(scale))


def rates_per_million(prompt: Decimal, completion: Decimal, cache_read: Decimal | None = None,
                      cache_write: Decimal | None = None, reasoning: Decimal | None = None,
                      per_thousand_requests: Decimal | None = None) -> Rates:
    """Rates from prices in USD per million tokens (per thousand requests for the fee)."""
    per_request = None if per_thousand_requests is None else per_thousand_requests * 1000  # micro-dollars
    given = [value.normalize() for value in (prompt, completion, cache_read, cache_write, reasoning, per_request)
             if value is not None]
    scale = max(map(decimals, given), default=0)
    return Rates(scale, scaled(prompt, scale), scaled(completion, scale), scaled(cache_read, scale),
                 scaled(cache_write, scale), scaled(reasoning, scale), scaled(per_request, scale) or 0)


@dataclass(frozen=True)
class PriceList:
    """Rates by prompt size: tiers[i] = (threshold, rates), ascending; the rates of the last
    tier whose threshold the prompt tokens exceed apply to all of the event's tokens."""

    tiers: tuple[tuple[int, Rates], ...]

    def rates_for(self, prompt_tokens: int) -> Rates:
        for threshold, rates in reversed(self.tiers):
            if prompt_tokens > threshold:
                return rates
        return self.tiers[0][1]

    def cost(self, prompt: int, completion: int, cached: int = 0, written: int = 0, reasoning: int = 0) -> int:
        return self.rates_for(prompt).cost(prompt, completion, cached, written, reasoning)


FLAT = -1  # the threshold of the base tier: every prompt size exceeds it

CATALOGUE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "output_reasoning_mtok",
                  "requests_kcount")


def catalogue_price_list(price: ModelPrice) -> PriceList | None:
    """A catalogue price as a PriceList; None when it prices neither prompt nor completion tokens.
    Tiers follow the catalogue: a tier's price applies when the input tokens exceed its start."""
    values = {key: getattr(price, key) for key in CATALOGUE_KEYS}
    if values["input_mtok"] is None and values["output_mtok"] is None:
        return None
    starts = sorted({tier.start for value in values.values() if isinstance(value, TieredPrices) for tier in value.tiers})

    def at(value, threshold):
        if not isinstance(value, TieredPrices):
            return value
        reached = [tier.price for tier in value.tiers if tier.start <= threshold]
        return reached[-1] if reached else value.base

    tiers = []
    for threshold in (FLAT, *starts):
        prompt, completion, cache_read, cache_write, reasoning, requests = (at(values[key], threshold)
                                                                            for key in CATALOGUE_KEYS)
        tiers.append((threshold, rates_per_million(prompt or Decimal(0), completion or Decimal(0), cache_read,
                                                   cache_write, reasoning, requests)))
    return PriceList(tuple(tiers))


# --- the catalogue -------------------------------------------------------------------------

SNAPSHOT = DataSnapshot(providers=catalogue_data.providers, from_auto_update=False)
DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")
US_PER_DAY = 86_400_000_000


class CatalogueModel:
    """A catalogue model: its name and its prices at any instant. Prices that change on a date
    are converted once per UTC day; those that depend on the time of day, at each event."""

    def __init__(self, info):
        self.info = info
        self.name = info.name
        self.by_day = isinstance(info.prices, ModelPrice) or all(
            price.constraint is None or isinstance(price.constraint, StartDateConstraint) for price in info.prices)
        self.days: dict[int, PriceList | None] = {}

    def prices_at(self, ts_us: int) -> PriceList | None:
        if not self.by_day:
            return catalogue_price_list(self.info.get_prices(utc(ts_us)))
        day = ts_us // US_PER_DAY
        try:
            return self.days[day]
        except KeyError:
            found = self.days[day] = catalogue_price_list(self.info.get_prices(utc(day * US_PER_DAY)))
            return found


def utc(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us // 1_000_000, timezone.utc)


@functools.lru_cache(maxsize=4096)
def catalogue_model(provider: str, model_id: str) -> CatalogueModel | None:
    """The catalogue's model for a provider and model id (both matched case-insensitively),
    else for the model id alone, else (a dated id such as gpt-4o-mini-2024-07-18) for the id
    without its date; None when the catalogue has none of them."""
    undated = DATE_SUFFIX.sub("", model_id)
    for ref in dict.fromkeys((model_id, undated)):
        for provider_id in dict.fromkeys((provider or None, None)):
            try:
                return CatalogueModel(SNAPSHOT.find_provider_model(ref, None, provider_id, None)[1])
            except LookupError:
                continue
    return None


# --- overrides and pricing a batch ---------------------------------------------------------------


def override_price_list(row) -> PriceList | None:
    """The operator's price (micro-dollars per million tokens = micro-dollars per token
    times 10**6); None unless both the prompt and the completion price are set."""
    if row is None or row["prompt_micros_per_mtok"] is None or row["completion_micros_per_mtok"] is None:
        return None
    return PriceList(((FLAT, Rates(6, row["prompt_micros_per_mtok"], row["completion_micros_per_mtok"],
                                   row["cache_read_micros_per_mtok"], row["cache_write_micros_per_mtok"])),))


class ModelPricing:
    """How events of one model are priced: by the operator's prices, the catalogue, or not at all."""

    def __init__(self, source: int, override: PriceList | None = None, model: CatalogueModel | None = None):
        self.source, self.override, self.model = source, override, model

    def price(self, ts_us: int, prompt: int, completion: int, cached: int = 0, written: int = 0,
              reasoning: int = 0) -> tuple[int, int]:
        """(cost in micro-dollars, price source) of one event."""
        prices = self.override if self.source == OVERRIDE else self.model.prices_at(ts_us) if self.model else None
        if prices is None:
            return 0, NONE
        return prices.cost(prompt, completion, cached, written, reasoning), self.source


def model_pricing(db: Connection, model_id: str, provider: str) -> ModelPricing:
    """The pricing of a model as the database and the catalogue say now: read once per batch."""
    override = override_price_list(db.execute(queries.MODEL_BY_ID, {"model_id": model_id}).fetchone())
    if override is not None:
        return ModelPricing(OVERRIDE, override=override)
    model = catalogue_model(provider, model_id)
    return ModelPricing(CATALOGUE, model=model) if model else ModelPricing(NONE)


def model_name(db: Connection, model_id: str, provider: str) -> str:
    """A config's default modelName: the operator's name, else the catalogue's, else the id."""
    row = db.execute(queries.MODEL_BY_ID, {"model_id": model_id}).fetchone()
    if row is not None:
        return row["display_name"]
    model = catalogue_model(provider, model_id)
    return model.name if model and model.name else model_id


# --- the override file (`usage-server import-prices FILE`) ---------------------------------------


def micro_dollars(value: Decimal) -> None:
    """Prices are stored in micro-dollars per million tokens: finer ones would be rounded silently."""
    _, digits, exponent = value.as_tuple()
    if exponent < -6 and any(digits[exponent + 6:]):  # digits only: no rounding context involved
        raise ValidationError("must have at most 6 decimals (micro-dollars per million tokens)")


def price_field(name: str) -> fields.Decimal:
    return fields.Decimal(data_key=name, load_default=None, validate=[validate.Range(0, MAX_PRICE), micro_dollars])


class PriceSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model_id = fields.String(data_key="modelId", required=True, validate=validate.Length(1, 128))
    provider = fields.String(required=True, validate=validate.Length(1, 128))
    display_name = fields.String(data_key="displayName", load_default=None)
    prompt_per_million = price_field("promptPerMillion")
    completion_per_million = price_field("completionPerMillion")
    cache_read_per_million = price_field("cacheReadPerMillion")
    cache_write_per_million = price_field("cacheWritePerMillion")


class CatalogueSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    models = fields.List(fields.Nested(PriceSchema), required=True)


def read_catalogue(path: Path) -> list[dict]:
    """Parse and validate an override file; raises ValueError with a readable reason."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
        return CatalogueSchema().load(document)["models"]
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"invalid catalogue {path}: {exc.messages}") from None


def micros_or_none(value: Decimal | None) -> int | None:
    return None if value is None else usd_to_micros(value)


def catalogue_rows(models: list[dict]) -> list[dict]:
    """The model table's rows for a read file; a model without a displayName keeps the
    catalogue's name (else its id); prices not given stay unknown."""
    rows = []
    for m in models:
        known = catalogue_model(m["provider"], m["model_id"])
        rows.append({
            "model_id": m["model_id"],
            "provider": m["provider"],
            "display_name": m["display_name"] or (known and known.name) or m["model_id"],
            "prompt_price": micros_or_none(m["prompt_per_million"]),
            "completion_price": micros_or_none(m["completion_per_million"]),
            "cache_read_price": micros_or_none(m["cache_read_per_million"]),
            "cache_write_price": micros_or_none(m["cache_write_per_million"]),
        })
    return rows


def import_catalogue(conn: Connection, models: list[dict]) -> int:
    """Insert or update overrides."""
    rows = catalogue_rows(models)
    conn.executemany(queries.UPSERT_MODEL, rows)
    return len(rows)
