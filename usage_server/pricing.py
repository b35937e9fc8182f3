"""The model catalogue: names and list prices used when an event carries no cost."""
import json
from decimal import Decimal
from pathlib import Path

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from . import queries
from .money import usd_to_micros
from .storage import Connection, write_transaction

DEFAULT_CATALOGUE = Path(__file__).resolve().parent / "prices.json"
MAX_PRICE = 10**6  # USD per million tokens


def micro_dollars(value: Decimal) -> None:
    """Prices are stored in micro-dollars per million tokens: finer ones would be rounded silently."""
    _, digits, exponent = value.as_tuple()
    if exponent < -6 and any(digits[exponent + 6:]):  # digits only: no rounding context involved
        raise ValidationError("must have at most 6 decimals (micro-dollars per million tokens)")


class PriceSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model_id = fields.String(data_key="modelId", required=True, validate=validate.Length(1, 128))
    provider = fields.String(required=True, validate=validate.Length(1, 128))
    display_name = fields.String(data_key="displayName", load_default=None)
    prompt_per_million = fields.Decimal(data_key="promptPerMillion", load_default=None,
                                        validate=[validate.Range(0, MAX_PRICE), micro_dollars])
    completion_per_million = fields.Decimal(data_key="completionPerMillion", load_default=None,
                                            validate=[validate.Range(0, MAX_PRICE), micro_dollars])


class CatalogueSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    models = fields.List(fields.Nested(PriceSchema), required=True)


def read_catalogue(path: Path) -> list[dict]:
    """Parse and validate a catalogue file; raises ValueError with a readable reason."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
        return CatalogueSchema().load(document)["models"]
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"invalid catalogue {path}: {exc.messages}") from None


def catalogue_rows(models: list[dict]) -> list[dict]:
    """The model table's rows for a read catalogue; prices not given stay unknown (unpriced)."""
    return [
        {
            "model_id": m["model_id"],
            "provider": m["provider"],
            "display_name": m["display_name"] or m["model_id"],
            "prompt_price": None if m["prompt_per_million"] is None else usd_to_micros(m["prompt_per_million"]),
            "completion_price": None if m["completion_per_million"] is None else usd_to_micros(m["completion_per_million"]),
        }
        for m in models
    ]


def import_catalogue(conn: Connection, models: list[dict]) -> int:
    """Insert or update models."""
    rows = catalogue_rows(models)
    conn.executemany(queries.UPSERT_MODEL, rows)
    return len(rows)


def load_default_catalogue(conn: Connection) -> None:
    """Fill the catalogue of a new database; later imports are never overwritten."""
    if conn.execute(queries.COUNT_MODELS).fetchone()[0] == 0:
        with write_transaction(conn):
            import_catalogue(conn, read_catalogue(DEFAULT_CATALOGUE))
