"""Connections whatever the engine: the engine a DATABASE setting names, one connection per
request on `g` (SQLite: the thread's kept one; PostgreSQL: one from the worker's pool),
write transactions, read snapshots, and start-up connections."""
import threading
from contextlib import contextmanager

from flask import current_app, g, has_request_context

from . import postgresql, sqlite
from .sqlite import DatabaseSetupError

Connection = sqlite.Connection | postgresql.Connection  # what the rest of the server annotates with
Row = sqlite.Row | postgresql.Row


def engine_for(database: str):
    """SQLite for a path or a file: URI, PostgreSQL for a postgresql:// or postgres:// URL."""
    return postgresql if postgresql.is_url(database) else sqlite


def engine_name(database: str) -> str:
    """"sqlite" or "postgresql": for names and messages, never for deciding what to do."""
    return engine_for(database).NAME


def engine_of(conn):
    return postgresql if isinstance(conn, postgresql.Connection) else sqlite


def redacted(database: str) -> str:
    """The DATABASE setting as messages name it: a URL without its password."""
    return postgresql.redacted(database)


def database_exists(database: str) -> bool:
    return engine_for(database).database_exists(database)


def same_database(first: str, second: str) -> bool:
    """Whether two DATABASE settings name one database (copy-to will not copy one onto itself)."""
    engine = engine_for(first)
    return engine is engine_for(second) and engine.same_database(first, second)


def check_database_path(database: str) -> None:
    """Refuse a DATABASE setting that would make the engine create or overwrite the wrong thing."""
    engine_for(database).check_database_path(database)


def connect(config, create: bool = False):
    """A connection of its own, for commands and tools (no request deadline)."""
    return engine_for(config["DATABASE"]).connect(config, create)


def get_db():
    """This request's connection, with this request's deadline (outside a request: its own)."""
    if "db" not in g:
        app = current_app._get_current_object()
        engine = engine_for(app.config["DATABASE"])
        if has_request_context():
            g.db, g.db_released = engine.request_connection(app), engine.release
        else:
            g.db, g.db_released = engine.connect(app.config), None
        engine.set_deadline(g.db, app.config["QUERY_TIME_LIMIT_MS"])
    return g.db


def close_db(exc=None) -> None:
    """Closes the connection, or hands a request's back clean."""
    db, released = g.pop("db", None), g.pop("db_released", None)
    if db is None:
        return
    if released is None:
        db.close()
    else:
        released(current_app._get_current_object(), db)


def write_transaction(conn):
    """The engine's write transaction: one writer at a time, waiting at most the busy timeout."""
    return engine_of(conn).write_transaction(conn)


def read_snapshot(conn):
    """One read transaction: every query of a response sees the same committed data."""
    return engine_of(conn).read_snapshot(conn)


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database cannot answer now ("busy", "full", "read_only", "time_limit" or
    "unavailable"), or None when `exc` is not an outage but a bug (a 500)."""
    return sqlite.unavailable_reason(exc) or postgresql.unavailable_reason(exc)


def database_size(conn) -> int:
    """Bytes the database takes on disk (SQLite: the file and its WAL)."""
    return engine_of(conn).database_size(conn)


def checkpoint(conn) -> None:
    """Between the steps of a bulk writer: let the engine move what was written into the
    database without waiting on readers (SQLite: a PASSIVE checkpoint), so its log stays small."""
    engine_of(conn).checkpoint(conn)


def backup(config, dest: str) -> str:
    """Copy the live database into the new file `dest` and check it (the check's verdict);
    an engine with its own tool for it (PostgreSQL: pg_dump) says how to use that instead."""
    return engine_for(config["DATABASE"]).backup(config, dest)


def holds_data(config) -> bool:
    """Whether the configured database exists and holds any owner (a restore would replace it)."""
    engine = engine_for(config["DATABASE"])
    if not engine.database_exists(config["DATABASE"]):
        return False
    conn = engine.connect(config)
    try:
        return "owner" in engine.table_names(conn) and conn.execute("SELECT 1 FROM owner LIMIT 1").fetchone() is not None
    finally:
        conn.close()


def restore_source(config, source: str) -> dict:
    """The settings to read the backup `source` with (read-only), once the engine found it intact."""
    return {**config, "DATABASE": engine_for(config["DATABASE"]).check_restore_source(config, source)}


def restore(config, source: str) -> None:
    """Replace the configured database's content with the checked backup `source`."""
    engine_for(config["DATABASE"]).restore(config, source)


def sync_identities(conn) -> None:
    """Call after inserting rows with explicit ids: later rows get ids after them."""
    engine_of(conn).sync_identities(conn)


def engine_status(conn) -> dict:
    """For /health: the engine, its version and the settings in effect."""
    return engine_of(conn).engine_status(conn)


@contextmanager
def start_up_connection(config, create: bool):
    """A connection for start-up work (schema upgrades, rollup upkeep), closed after it.

    The setting is checked first and an SQLite file created only when `create`. It waits
    as long as another starting process holds the write lock, whatever BUSY_TIMEOUT_MS
    says, and any database error is reported as a DatabaseSetupError naming the database.
    """
    engine = engine_for(config["DATABASE"])
    engine.check_database_path(config["DATABASE"])
    try:
        conn = engine.connect(engine.start_up_config(config), create=create)
        try:
            yield conn
        finally:
            conn.close()
    except Exception as exc:
        if not engine.database_error(exc) or isinstance(exc, DatabaseSetupError):
            raise
        name = redacted(config["DATABASE"])
        reason = " ".join(str(exc).split())  # one line: libpq adds a hint on a line of its own
        raise DatabaseSetupError(f"cannot use the database {name}: {reason}") from None


def close_pools(database: str | None = None) -> None:
    """Close this process's pooled connections to `database`, or to every database (a server
    never needs to: its pools live as long as its workers; tests that make many databases do)."""
    for engine in (sqlite, postgresql) if database is None else (engine_for(database),):
        engine.close_pools(database)


def init_app(app) -> None:
    app.extensions["usage_server.connections"] = threading.local()
    app.teardown_appcontext(close_db)
