"""Request ids, one JSON log line per request, and Prometheus metrics at GET /metrics.

Each request gets an id (a sane incoming X-Request-Id, or a new one) returned in the
X-Request-Id header and written in its log line and in any error it logs. The metrics are
off unless USAGE_SERVER_METRICS=on; under gunicorn every worker writes them to files in
PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py makes one) and a scrape of any worker adds them up.
Both add microseconds to a request: a few counter increments and one formatted line.
"""
import hmac
import json
import logging
import os
import re
import sys
import time
import uuid

from flask import Response, current_app, g, request

from .auth import CREDENTIAL_PARAMETERS, KEY_PATTERN
from .errors import ApiError

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # what an incoming X-Request-Id may be
REMOVED = "[removed]"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

request_log = logging.getLogger("usage_server.requests")


def request_id() -> str:
    """This request's id (outside a request: none)."""
    return g.get("request_id", "-")


def start_request() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def logged_path() -> str:
    """The path and query as logged: a key-shaped value, or a credential-like parameter, removed."""
    path = KEY_PATTERN.sub(REMOVED, request.path)
    if not request.query_string:
        return path
    parts = []
    for name, value in request.args.items(multi=True):
        if name.lower() in CREDENTIAL_PARAMETERS or KEY_PATTERN.search(value) or KEY_PATTERN.search(name):
            name, value = KEY_PATTERN.sub(REMOVED, name), REMOVED
        parts.append(f"{name}={value}")
    return f"{path}?{'&'.join(parts)}"


def finish_request(response: Response) -> Response:
    """The X-Request-Id header, the request's log line and its metrics."""
    response.headers["X-Request-Id"] = g.get("request_id") or "-"
    started = g.get("request_started")
    duration = 0.0 if started is None else time.perf_counter() - started
    config = current_app.config
    if config["REQUEST_LOG"] == "json":
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "request_id": g.get("request_id"), "pid": os.getpid(),
                  "method": request.method, "path": logged_path(), "status": response.status_code,
                  "duration_ms": round(duration * 1000, 3), "owner_id": g.get("owner_id")}
        if "events_accepted" in g:
            record["events_accepted"] = g.events_accepted
        if "unavailable_reason" in g:
            record["unavailable"] = g.unavailable_reason
        request_log.info(json.dumps(record, separators=(",", ":")))
    metrics = current_app.extensions.get("usage_server.metrics")
    if metrics is not None:
        metrics.observe(response.status_code, duration)
    return response


class Metrics:
    """The server's Prometheus metrics (counters and histograms, one set per process)."""

    def __init__(self):
        from prometheus_client import Counter, Histogram

        self.requests = Counter("usage_server_requests", "HTTP requests answered, by route and status",
                                ["endpoint", "method", "status"])
        self.latency = Histogram("usage_server_request_duration_seconds", "Time to answer a request, by route",
                                 ["endpoint", "status"], buckets=LATENCY_BUCKETS)
        self.events = Counter("usage_server_events", "Events received in stored batches, by outcome", ["outcome"])
        self.rejected = Counter("usage_server_rejected_batches", "Event batches refused (a 4xx answer)")
        self.unavailable = Counter("usage_server_unavailable", "Answers 503 (database unavailable), by cause",
                                   ["cause"])

    def observe(self, status: int, duration: float) -> None:
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "unmatched"  # the route, never the raw path
        self.requests.labels(endpoint, request.method, str(status)).inc()
        self.latency.labels(endpoint, str(status)).observe(duration)
        if "stored" in g:
            accepted, duplicates, conflicts = g.stored
            self.events.labels("accepted").inc(accepted)
            self.events.labels("duplicate").inc(duplicates - conflicts)
            self.events.labels("conflict").inc(conflicts)
        elif endpoint == "/v1/model-usage/events" and request.method == "POST" and 400 <= status < 500:
            self.rejected.inc()
        if "unavailable_reason" in g:
            self.unavailable.labels(g.unavailable_reason).inc()


_metrics = None  # one per process: prometheus_client's registry is the process's


def process_metrics() -> Metrics:
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def record_stored(accepted: int, duplicates: int, conflicts: int) -> None:
    """What a stored batch counted, for the log line and the metrics."""
    g.events_accepted = accepted
    g.stored = (accepted, duplicates, conflicts)


def record_unavailable(reason: str) -> None:
    g.unavailable_reason = reason


class DatabaseCollector:
    """Gauges read at scrape time: the database's size and the age of the newest event."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from .storage import database_size, get_db
        from .queries import NEWEST_EVENT

        db = get_db()
        size = GaugeMetricFamily("usage_server_database_bytes", "Size of the database on disk")
        size.add_metric([], database_size(db))
        yield size
        newest = db.execute(NEWEST_EVENT).fetchone()[0]
        age = GaugeMetricFamily("usage_server_newest_event_age_seconds",
                                "Seconds since the newest stored event's timestamp (NaN: no event)")
        age.add_metric([], float("nan") if newest is None else time.time() - newest / 1_000_000)
        yield age


def metrics_view():
    """GET /metrics: every worker's counters added up (multiprocess mode) and the database gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    token = current_app.config["METRICS_TOKEN"]
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "GET /metrics needs the metrics token: Authorization: Bearer <token>")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    database = CollectorRegistry()
    database.register(DatabaseCollector(current_app))
    return Response(body + generate_latest(database), content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


def init_app(app) -> None:
    log_format = str(app.config["REQUEST_LOG"]).lower()
    if log_format not in {"json", "off"}:
        raise ValueError(f"REQUEST_LOG (USAGE_SERVER_REQUEST_LOG) must be json or off, not {app.config['REQUEST_LOG']!r}")
    app.config["REQUEST_LOG"] = log_format
    if log_format == "json" and not request_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False
    metrics = str(app.config["METRICS"]).lower()
    if metrics not in {"on", "off", "true", "false"}:
        raise ValueError(f"METRICS (USAGE_SERVER_METRICS) must be on or off, not {app.config['METRICS']!r}")
    app.before_request(start_request)
    app.after_request(finish_request)
    if metrics in {"on", "true"}:
        app.extensions["usage_server.metrics"] = process_metrics()
        app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
