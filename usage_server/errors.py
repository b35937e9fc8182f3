"""One JSON error shape for every failure: {"error", "code", "details"?}."""
import logging

from flask import g, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from .storage import unavailable_reason

log = logging.getLogger(__name__)

CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
    503: "service_unavailable",
}
MESSAGES = {
    400: "the request is not valid",
    401: "a valid API key is required",
    403: "this API key does not have the scope this request needs",
    404: "no such resource",
    405: "this method is not allowed here",
    413: "the request body is larger than the 2 MiB limit",
    500: "the server failed to answer this request",
    503: "the database is busy or unavailable, retry shortly",
}
# why the database could not answer (storage.unavailable_reason), for the 503's sentence
UNAVAILABLE = {
    "busy": "the database is busy, retry shortly",
    "full": "the database is full; nothing was stored",
    "read_only": "the database is read-only; nothing was stored",
    "time_limit": "the query ran past the server's time limit",
}
# marshmallow's own messages, as the stable upper-case code and lower-case sentence of `details`
LIBRARY_MESSAGES = {
    "Unknown field.": ("UNKNOWN_FIELD", "is not an accepted field"),
    "Missing data for required field.": ("REQUIRED", "is required"),
    "Field may not be null.": ("REQUIRED", "must not be null"),
    "Not a valid integer.": ("INVALID_TYPE", "must be an integer"),
    "Not a valid number.": ("INVALID_TYPE", "must be a number"),
    "Not a valid string.": ("INVALID_TYPE", "must be a string"),
    "Not a valid list.": ("INVALID_TYPE", "must be a list"),
    "Not a valid mapping type.": ("INVALID_TYPE", "must be an object"),
    "Invalid input type.": ("INVALID_TYPE", "must be an object"),
}


class ApiError(Exception):
    """An expected failure with its status; raised anywhere, answered by one handler."""

    def __init__(self, status, message=None, details=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message or MESSAGES.get(status, "error")
        self.details = details
        self.headers = headers or {}


def detail(path, message, code=None, suggestion=None):
    item = {"code": code or "INVALID", "message": message, "path": path}
    if suggestion:
        item["suggestion"] = suggestion
    return item


def error_response(status, message=None, details=None, headers=None):
    body = {"error": message or MESSAGES.get(status, "error"), "code": CODES.get(status, "error")}
    if details:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def flatten(messages, prefix=""):
    """marshmallow's nested messages to [(dotted path, message)], e.g. events.3.timestamp."""
    if isinstance(messages, dict):
        items = []
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix and key != "_schema" else (prefix or str(key))
            items.extend(flatten(value, path))
        return items
    if isinstance(messages, list):
        items = []
        for message in messages:
            items.extend(flatten(message, prefix) if isinstance(message, (dict, list)) else [(prefix, message)])
        return items
    return [(prefix, str(messages))]


def validation_details(err: ValidationError) -> list[dict]:
    """Messages may carry a code and a suggestion: "CODE|message|suggestion"."""
    details = []
    for path, message in flatten(err.messages):
        parts = message.split("|", 2) if "|" in message else [*LIBRARY_MESSAGES.get(message, ("", message))]
        code, text, suggestion = (parts + [None])[:3]
        details.append(detail(path, text, code or None, suggestion))
    return details


def handle_validation_error(err: ValidationError):
    details = validation_details(err)
    first = details[0]
    return error_response(400, f"{first['path']}: {first['message']}" if first["path"] else first["message"], details)


def handle_api_error(err: ApiError):
    return error_response(err.status, err.message, err.details, err.headers)


def handle_http_exception(err: HTTPException):
    headers = {}
    if err.code == 405 and err.valid_methods:
        headers["Allow"] = ", ".join(err.valid_methods)
    if err.code == 413:
        headers["Connection"] = "close"
    return error_response(err.code, MESSAGES.get(err.code) or err.description, headers=headers)


def handle_unexpected(err: Exception):
    if isinstance(err, HTTPException):
        return handle_http_exception(err)
    reason = unavailable_reason(err)
    if reason is not None:
        g.unavailable_reason = reason  # for the request's log line and the metrics
        log.warning("database unavailable (request %s): %s", g.get("request_id"), err)
        from flask import current_app

        message = UNAVAILABLE.get(reason)
        return error_response(503, message, headers={"Retry-After": str(current_app.config["RETRY_AFTER_SECONDS"])})
    log.exception("unexpected error (request %s)", g.get("request_id"))
    return error_response(500)


def init_app(app) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
