"""Signed webhooks for budget alerts: safe destinations, signing, and delivery from an outbox.

Alerts are written to the webhook_delivery table in the transaction that raises them. Each
server process runs one background thread (started with the app wsgi.py makes, never in a
request) that claims a due delivery by leasing its row in a write transaction, so one process at a
time delivers an alert, across workers and hosts; it POSTs it, then records the attempt.
A failed attempt is retried after the next delay of WEBHOOK_BACKOFF_SECONDS; after the last
one the delivery is `failed`. A process that dies mid-attempt leaves a lease that expires
(WEBHOOK_LEASE_SECONDS) and another process delivers the alert.

Destinations are checked when a budget is made and again at every attempt: the host's every
address must be public, unless the host is listed in WEBHOOK_ALLOW; the connection goes to
the address that was checked, so a DNS answer cannot change between check and connect.
Redirects are never followed (http.client does not), and a 3xx is a failed attempt.
"""
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import os
import secrets
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from . import budget_queries as sql
from .money import micros_to_usd
from .storage import connect, write_transaction
from .timeranges import iso_instant

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Usage-Server-Signature"
DEFAULTS = {
    "WEBHOOK_ALLOW": "",  # comma-separated hosts or addresses allowed though not public
    # seconds before each retry: attempts at 0 s, 10 s, 40 s (within three minutes), then
    # 100 s, 400 s, 1300 s, 3100 s and 6700 s (over an hour and a half); then `failed`
    "WEBHOOK_BACKOFF_SECONDS": "10,30,60,300,900,1800,3600",
    "WEBHOOK_POLL_SECONDS": 2,  # how often each process looks for due deliveries
    "WEBHOOK_TIMEOUT_SECONDS": 5,  # per attempt: connect, send, and each read
    "WEBHOOK_LEASE_SECONDS": 60,  # a claimed delivery is left alone this long
    "WEBHOOK_DELIVERY": True,  # whether a server process (wsgi.py) runs the delivery thread
}
MAX_ERROR = 300  # characters of lastError


class UnsafeDestination(ValueError):
    """The URL's host is not public and not allowed, or does not resolve."""


def allowed_hosts(config) -> set[str]:
    value = config.get("WEBHOOK_ALLOW") or ""  # "a,b", or a list; from the environment maybe a number
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return {name.strip().lower().strip("[]") for name in names if name.strip()}


def is_public(address: str) -> bool:
    """A global unicast address (an IPv4-mapped IPv6 address is judged as the IPv4 it maps)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def resolve(url: str, config) -> tuple[str, int, str]:
    """(host, port, the address to connect to) for a webhook URL, or UnsafeDestination: every
    address the host resolves to must be public unless the host is in WEBHOOK_ALLOW."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeDestination(f"the host {host!r} does not resolve") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise UnsafeDestination(f"the host {host!r} does not resolve")
    if host not in allowed_hosts(config):
        private = [address for address in addresses if not is_public(address)]
        if private:
            raise UnsafeDestination(
                f"the host {host!r} resolves to {private[0]}, a loopback, private or link-local address; "
                "list the host in USAGE_SERVER_WEBHOOK_ALLOW to allow it")
    return host, port, addresses[0]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Usage-Server-Signature header's value: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def payload(row) -> bytes:
    return json.dumps({
        "type": "budget.threshold_crossed",
        "id": row["id"],
        "budgetId": row["budget_id"],
        "budgetName": row["budget_name"],
        "threshold": row["threshold"],
        "amount": micros_to_usd(row["amount_micros"]),
        "spent": micros_to_usd(row["spent_micros"]),
        "periodStart": iso_instant(row["period_start"] * 1_000_000),
        "periodEnd": iso_instant(row["period_end"] * 1_000_000),
        "crossedAt": row["crossed_at"],
    }, separators=(",", ":")).encode()


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the certificate verified for the URL's host name."""

    def __init__(self, host, address, port, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, address, port, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


def post(url: str, body: bytes, headers: dict, config) -> str | None:
    """One attempt: None when answered 2xx, else why it failed (never follows a redirect)."""
    try:
        host, port, address = resolve(url, config)
    except UnsafeDestination as exc:
        return str(exc)
    parts = urlsplit(url)
    kind = PinnedHTTPSConnection if parts.scheme == "https" else PinnedHTTPConnection
    conn = kind(host, address, port, float(config["WEBHOOK_TIMEOUT_SECONDS"]))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        response.read(64 * 1024)
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status}" + (" (redirects are not followed)" if 300 <= response.status < 400 else "")
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        conn.close()


def backoff(config) -> list[float]:
    value = config["WEBHOOK_BACKOFF_SECONDS"]  # "10,30,60", or one number from the environment
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [float(item) for item in items if str(item).strip()]


def now_us() -> int:
    return time.time_ns() // 1000


def claim(conn, config) -> tuple[str, str] | None:
    """Lease one due delivery: (alert id, lease token), or None when nothing is due."""
    current, token = now_us(), secrets.token_hex(8)
    if conn.execute(sql.DUE_DELIVERY, {"now_us": current}).fetchone() is None:
        return None  # the usual poll: one read, no write lock
    with write_transaction(conn):
        row = conn.execute(sql.DUE_DELIVERY, {"now_us": current}).fetchone()
        if row is None:
            return None
        leased = conn.execute(sql.LEASE_DELIVERY, {
            "alert_id": row[0], "lease_token": token, "now_us": current,
            "lease_until_us": current + int(float(config["WEBHOOK_LEASE_SECONDS"]) * 1_000_000),
        }).rowcount
    return (row[0], token) if leased else None


def deliver_one(conn, config) -> bool:
    """Claim, attempt and record one due delivery; False when none was due."""
    claimed = claim(conn, config)
    if claimed is None:
        return False
    alert_id, token = claimed
    row = conn.execute(sql.DELIVERY_PAYLOAD, {"alert_id": alert_id}).fetchone()
    if row is None:  # its budget was deleted meanwhile
        return True
    body = payload(row)
    headers = {SIGNATURE_HEADER: signature(row["webhook_secret"], int(time.time()), body)}
    error = post(row["webhook_url"], body, headers, config)
    delays = backoff(config)
    attempt = row["attempts"] + 1
    if error is None:
        state, next_at, delivered = "delivered", now_us(), iso_instant(now_us() // 1000 * 1000)
    elif attempt > len(delays):
        state, next_at, delivered = "failed", now_us(), None
    else:
        state, next_at, delivered = "pending", now_us() + int(delays[attempt - 1] * 1_000_000), None
    with write_transaction(conn):
        conn.execute(sql.RECORD_ATTEMPT, {
            "alert_id": alert_id, "lease_token": token, "state": state, "delivered_at": delivered,
            "last_error": None if error is None else error[:MAX_ERROR], "next_attempt_us": next_at,
        })
    if error is not None:
        log.warning("webhook delivery of alert %s failed (attempt %d): %s", alert_id, attempt, error[:MAX_ERROR])
    return True


def deliver_due(config) -> int:
    """Deliver every delivery due now, one at a time; returns how many were attempted."""
    conn = connect(config)
    try:
        count = 0
        while deliver_one(conn, config):
            count += 1
        return count
    finally:
        conn.close()


class Deliverer:
    """The process's delivery thread: polls the outbox every WEBHOOK_POLL_SECONDS."""

    def __init__(self, config):
        self.config = dict(config)
        self.thread = threading.Thread(target=self.run, name="usage-server-webhooks", daemon=True)

    def run(self) -> None:
        """Poll with one kept connection; after a database error, a new one at the next poll."""
        interval, conn = float(self.config["WEBHOOK_POLL_SECONDS"]), None
        while True:
            time.sleep(interval)
            try:
                if conn is None:
                    conn = connect(self.config)
                while deliver_one(conn, self.config):
                    pass
            except Exception:  # a database outage: try again at the next poll
                log.exception("webhook delivery poll failed")
                conn = close_quietly(conn)


def close_quietly(conn) -> None:
    try:
        if conn is not None:
            conn.close()
    except Exception:  # already broken: nothing more to release
        pass


_deliverers: dict = {}
_deliverers_lock = threading.Lock()


def ensure_delivery(app) -> None:
    """Start this process's delivery thread for the app's database once (again in a worker
    forked after the app was made, as under gunicorn --preload)."""
    key = (os.getpid(), app.config["DATABASE"])
    if key in _deliverers:
        return
    with _deliverers_lock:
        if key not in _deliverers:
            deliverer = _deliverers[key] = Deliverer(app.config)
            deliverer.thread.start()


def serve(app) -> None:
    """Deliver webhooks from this server process (wsgi.py calls it for every gunicorn worker),
    unless WEBHOOK_DELIVERY is false. Never started by tests' apps or by commands."""
    enabled = app.config["WEBHOOK_DELIVERY"]
    if isinstance(enabled, str):
        enabled = enabled.strip().lower() not in ("0", "false", "no", "off", "")
    if enabled is None or enabled:
        ensure_delivery(app)
        app.before_request(lambda: ensure_delivery(app))


def init_app(app) -> None:
    for name, value in DEFAULTS.items():
        app.config.setdefault(name, value)
