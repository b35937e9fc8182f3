"""The budget endpoints: POST/GET /v1/budgets, GET/DELETE /v1/budgets/<id>, and its alerts."""
import secrets

from flask import Blueprint, current_app, jsonify

from . import budget_queries as sql
from . import queries
from .api import load_body, load_query, no_store
from .auth import current_owner_id, requires_scope
from .budget_schemas import BudgetSchema
from .budgets import alerts_json, budget_json, create_budget
from .errors import ApiError, detail
from .money import usd_to_micros
from .schemas import EmptyQuerySchema
from .storage import get_db, read_snapshot, write_transaction
from .webhooks import UnsafeDestination, resolve

bp = Blueprint("budgets", __name__)
bp.after_request(no_store)


def owned_budget(owner_id: int, budget_id: str):
    """The owner's budget, or a 404 alike for an unknown id and another owner's."""
    row = get_db().execute(sql.BUDGET_BY_ID, {"owner_id": owner_id, "id": budget_id}).fetchone()
    if row is None:
        raise ApiError(404, f"no budget {budget_id!r}")
    return row


@bp.post("/v1/budgets")
@requires_scope("write")
def create():
    data = load_body(BudgetSchema())
    owner_id = current_owner_id()
    db = get_db()
    config_id = data["model_config_id"]
    if config_id is not None and db.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": config_id}).fetchone() is None:
        raise ApiError(400, "modelConfigId: is not one of your model configurations", [
            detail("modelConfigId", "is not one of your model configurations", "UNKNOWN_MODEL_CONFIG",
                   "create it with POST /v1/model-configs first, or leave it out for all usage")])
    url, secret = data["webhook_url"], None
    if url is not None:
        try:
            resolve(url, current_app.config)
        except UnsafeDestination as exc:
            raise ApiError(400, f"webhookUrl: {exc}", [
                detail("webhookUrl", str(exc), "UNSAFE_DESTINATION",
                       "use a public host, or list this one in USAGE_SERVER_WEBHOOK_ALLOW")]) from None
        secret = f"whsec_{secrets.token_urlsafe(32)}"
    fields = {
        "name": data["name"], "amount_micros": usd_to_micros(data["amount"]), "period": data["period"],
        "timezone": data["timezone"] or current_app.config["DEFAULT_TIMEZONE"], "config_id": config_id,
        "thresholds": data["thresholds"], "webhook_url": url, "webhook_secret": secret,
    }
    with write_transaction(db):
        budget_id = create_budget(db, owner_id, fields)
    with read_snapshot(db):
        body = budget_json(db, owned_budget(owner_id, budget_id))
    if secret is not None:
        body["webhookSecret"] = secret  # shown this once
    return jsonify(body), 201


@bp.get("/v1/budgets")
@requires_scope("read")
def list_all():
    load_query(EmptyQuerySchema())
    db = get_db()
    with read_snapshot(db):
        data = [budget_json(db, row) for row in db.execute(sql.OWNER_BUDGETS, {"owner_id": current_owner_id()}).fetchall()]
    return jsonify({"data": data, "total": len(data)})


@bp.get("/v1/budgets/<budget_id>")
@requires_scope("read")
def show(budget_id):
    load_query(EmptyQuerySchema())
    db = get_db()
    with read_snapshot(db):
        return jsonify(budget_json(db, owned_budget(current_owner_id(), budget_id)))


@bp.delete("/v1/budgets/<budget_id>")
@requires_scope("write")
def delete(budget_id):
    load_query(EmptyQuerySchema())
    owner_id = current_owner_id()
    db = get_db()
    with write_transaction(db):
        owned_budget(owner_id, budget_id)
        db.execute(sql.DELETE_BUDGET_DELIVERIES, {"id": budget_id})
        db.execute(sql.DELETE_BUDGET_ALERTS, {"id": budget_id})
        db.execute(sql.DELETE_BUDGET, {"owner_id": owner_id, "id": budget_id})
    return "", 204


@bp.get("/v1/budgets/<budget_id>/alerts")
@requires_scope("read")
def alerts(budget_id):
    load_query(EmptyQuerySchema())
    db = get_db()
    with read_snapshot(db):
        owned_budget(current_owner_id(), budget_id)
        data = alerts_json(db, budget_id)
    return jsonify({"data": data, "total": len(data)})
