"""API keys: `usk_<id>_<secret>`, stored as SHA-256 hashes, with read/write scopes."""
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timezone
from functools import wraps

from flask import g, request
from flask_httpauth import HTTPTokenAuth
from werkzeug.datastructures import Authorization

from . import queries
from .storage import get_db
from .errors import ApiError, detail, error_response

KEY_PREFIX = "usk_"
# what create_key makes: 12 hex digits of id, 40 URL-safe characters of secret (240 bits)
KEY_PATTERN = re.compile(r"usk_[0-9a-f]{12}_[A-Za-z0-9_-]{40}")
SCOPES = ("read", "write")
CREDENTIAL_PARAMETERS = {"api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "authorization"}


class KeyAuth(HTTPTokenAuth):
    """Token auth that also takes the bare `Authorization: <key>` of the reference's curl."""

    def get_auth(self):
        header = request.headers.get("Authorization", "").strip()
        if not header:
            return None
        scheme, _, rest = header.partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else header
        return Authorization("bearer", token=token)


token_auth = KeyAuth(scheme="Bearer", realm="usage_server")


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def create_key(conn, owner: str, scopes: list[str], name: str = "") -> tuple[str, str]:
    """Store a new key for `owner` (created if needed); returns (key id, raw key)."""
    conn.execute(queries.INSERT_OWNER, {"name": owner, "created_at": now_iso()})
    owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": owner}).fetchone()[0]
    key_id = secrets.token_hex(6)
    raw_key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(30)}"
    conn.execute(
        queries.INSERT_KEY,
        {
            "id": key_id,
            "owner_id": owner_id,
            "name": name,
            "key_hash": hash_key(raw_key),
            "scopes": ",".join(s for s in SCOPES if s in scopes),
            "created_at": now_iso(),
        },
    )
    return key_id, raw_key


@token_auth.verify_token
def verify_token(token):
    if not token or not KEY_PATTERN.fullmatch(token):
        return None
    digest = hash_key(token)
    row = get_db().execute(queries.KEY_BY_HASH, {"key_hash": digest}).fetchone()
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    g.owner_id = row["owner_id"]
    return {"owner_id": row["owner_id"], "key_id": row["id"], "scopes": row["scopes"].split(",")}


@token_auth.get_user_roles
def get_user_roles(user):
    return user["scopes"]


def requires_scope(scope: str):
    """A view that needs a key with `scope`; a key without it is told which scope it lacks."""

    def decorate(view):
        protected = token_auth.login_required(role=scope)(view)

        @wraps(view)
        def checked(*args, **kwargs):
            g.required_scope = scope
            return protected(*args, **kwargs)

        return checked

    return decorate


@token_auth.error_handler
def auth_error(status):
    if status == 403:
        return error_response(403, f'this key lacks the "{g.get("required_scope")}" scope')
    return error_response(401, headers={"WWW-Authenticate": token_auth.authenticate_header()})


def current_owner_id() -> int:
    return token_auth.current_user()["owner_id"]


def refuse_credentials_in_url():
    """A key in a URL ends up in logs, histories and Referer headers: never take one from there.

    Any request whose query string has a credential-like parameter, or a key-shaped value,
    is refused before authentication, so such a key never authenticates anything.
    """
    for name, value in request.args.items(multi=True):
        if name.lower() in CREDENTIAL_PARAMETERS or KEY_PATTERN.search(value) or KEY_PATTERN.search(name):
            raise ApiError(400, "API keys are not accepted in the URL; send them in the Authorization header", [
                detail(name, "must not carry an API key", "CREDENTIALS_IN_URL",
                       "send `Authorization: Bearer <key>`, and revoke a key that was sent in a URL")])


def init_app(app) -> None:
    app.before_request(refuse_credentials_in_url)
