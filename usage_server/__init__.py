"""usage_server: self-hosted LLM usage and cost analytics on one SQLite file."""
import os

from flask import Flask

from .jsonout import OrjsonProvider

__version__ = "0.1.0"


def create_app(test_config=None, prepare_database=True):
    """Build the app: defaults, then USAGE_SERVER_* environment variables, then tests.

    The server prepares its database at start-up (creating it if needed); the CLI passes
    prepare_database=False and lets each command decide whether it may create one.
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        DATABASE=os.path.join(app.instance_path, "usage.sqlite"),
        DATA_SOURCE="",  # the meta.dataSource of answers; by default usage-server-<engine>
        BUSY_TIMEOUT_MS=5000,
        SYNCHRONOUS="FULL",
        QUERY_TIME_LIMIT_MS=10000,
        DEFAULT_TIMEZONE="UTC",
        FAST_TIMEZONES="",  # comma-separated IANA names whose local days are pre-aggregated
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        RETRY_AFTER_SECONDS=1,
        KEEP_DAYS=0,
        REQUEST_LOG="json",  # one JSON line per request on stderr, or "off"
        METRICS="off",  # "on": Prometheus metrics at GET /metrics
        METRICS_TOKEN="",  # if set, GET /metrics needs Authorization: Bearer <token>  # 0: keep every raw event; N: prune those older than N days, daily
    )
    app.config.from_prefixed_env("USAGE_SERVER")
    if test_config is not None:
        app.config.from_mapping(test_config)
    check_default_timezone(app.config["DEFAULT_TIMEZONE"])
    app.config["FAST_TIMEZONES"] = fast_timezones(app.config["FAST_TIMEZONES"])
    app.json = OrjsonProvider(app)  # answers' keys in the server's order, encoded by orjson

    from . import api, auth, cli, dashboard, docs, errors, observability, openapi, otlp, retention, startup, storage
    from . import budget_views, webhooks

    storage.init_app(app)
    app.config["DATA_SOURCE"] = app.config["DATA_SOURCE"] or f"usage-server-{storage.engine_name(app.config['DATABASE'])}"
    if prepare_database:
        startup.prepare_database(app)
    errors.init_app(app)
    observability.init_app(app)  # before auth: every request gets its id first
    auth.init_app(app)
    cli.init_app(app)
    retention.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(otlp.bp)
    app.register_blueprint(budget_views.bp)
    webhooks.init_app(app)
    return app


def check_default_timezone(name) -> None:
    """A misspelt default zone stops the server at start, rather than failing every request."""
    from .schemas import available_zone_names

    if not isinstance(name, str) or name not in available_zone_names():
        raise ValueError(f"DEFAULT_TIMEZONE (USAGE_SERVER_DEFAULT_TIMEZONE) is not an IANA time zone name: {name!r}")


def fast_timezones(value) -> tuple[str, ...]:
    """FAST_TIMEZONES as a tuple of names, from a comma-separated string or a list; a
    misspelt name stops the server at start."""
    from .schemas import available_zone_names

    names = value.split(",") if isinstance(value, str) else value
    if isinstance(names, (list, tuple)) and all(isinstance(name, str) for name in names):
        names = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
        if all(name in available_zone_names() for name in names):
            return names
    raise ValueError(f"FAST_TIMEZONES (USAGE_SERVER_FAST_TIMEZONES) is not a list of IANA time zone names: {value!r}")
