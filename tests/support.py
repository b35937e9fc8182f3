"""Helpers shared by the reliability tests: catalogue prices, keys on a bare database."""
import json
from decimal import Decimal
from pathlib import Path

from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

PRICES_FILE = Path(__file__).resolve().parent.parent / "usage_server" / "prices.json"


def catalogue_prices() -> dict:
    """model id -> (prompt, completion) USD per million tokens as strings, for the oracle."""
    models = json.loads(PRICES_FILE.read_text(), parse_float=Decimal)["models"]
    return {
        model["modelId"]: (str(model["promptPerMillion"]), str(model["completionPerMillion"]))
        for model in models
        if model.get("promptPerMillion") is not None and model.get("completionPerMillion") is not None
    }


def prepare_database(path, owners=("acme",), **config) -> dict:
    """Create the schema at `path` and one read/write key per owner: owner -> raw key."""
    app = create_app({"DATABASE": str(path), **config})
    conn = connect(app.config)
    keys = {}
    with write_transaction(conn):
        for owner in owners:
            keys[owner] = create_key(conn, owner, ["read", "write"])[1]
    conn.close()
    return keys


def catalogue_names() -> dict:
    """model id -> display name in the catalogue (a config's default modelName)."""
    return {model["modelId"]: model["displayName"] for model in json.loads(PRICES_FILE.read_text())["models"]}
