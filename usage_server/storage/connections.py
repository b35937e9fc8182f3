"""SQLite connections: one per worker thread, on `g` per request; pragmas set in one place;
write transactions, read snapshots, and the checks made before a database is opened."""
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import pathname2url, url2pathname

import click
from flask import current_app, g, has_request_context

Connection = sqlite3.Connection  # what the rest of the server annotates connections with
Row = sqlite3.Row
START_UP_WAIT_MS = 600_000  # a process starting while another upgrades or builds rollups waits for it
PROGRESS_STEPS = 10_000  # SQLite VM steps between two deadline checks
clock = time.monotonic  # the deadline's time source; tests swap in one that counts the checks
KEPT_SETTINGS = ("DATABASE", "BUSY_TIMEOUT_MS", "SYNCHRONOUS", "MAX_PAGE_COUNT")  # fixed at connect


class DatabaseSetupError(click.ClickException):
    """A database path that cannot be used, reported before anything is created."""


def database_file(database: str) -> Path | None:
    """The file behind DATABASE: a path, or an SQLite URI such as file:/srv/usage.sqlite?mode=ro."""
    if database == ":memory:":
        return None
    if database.startswith("file:"):
        return Path(url2pathname(urlsplit(database).path))
    return Path(database)


def database_uri(database: str, create: bool) -> str:
    """What SQLite opens: a plain path read-write, created only when `create` (start-up)."""
    if database == ":memory:" or database.startswith("file:"):
        return database
    return f"file:{pathname2url(os.path.abspath(database))}?mode={'rwc' if create else 'rw'}"


def database_exists(database: str) -> bool:
    """Whether DATABASE names an existing file (":memory:" always exists: nothing to create)."""
    target = database_file(database)
    return target is None or target.exists()


def check_database_path(path: str) -> None:
    """Refuse paths that would make SQLite create or overwrite the wrong thing."""
    target = database_file(path)
    if target is None:
        return
    if not target.parent.is_dir():
        raise DatabaseSetupError(f"directory {target.parent} does not exist")
    if target.exists():
        try:
            with open(target, "rb") as handle:
                header = handle.read(16)
        except OSError as exc:  # a directory, or a file we may not read
            raise DatabaseSetupError(f"cannot use {target}: {exc.strerror}") from None
        if header and header != b"SQLite format 3\x00":
            raise DatabaseSetupError(f"{target} exists and is not an SQLite database")


def connect(config, create: bool = False) -> sqlite3.Connection:
    """Open a connection with the server's pragmas (busy_timeout first).

    Only start-up creates the file: a database that vanishes later is an error, not a
    new empty database. A read-only file keeps its journal mode and serves reads.
    """
    conn = sqlite3.connect(
        database_uri(config["DATABASE"], create), isolation_level=None, check_same_thread=False, uri=True
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(config['BUSY_TIMEOUT_MS'])}")
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorname != "SQLITE_READONLY":
            raise
    if config.get("MAX_PAGE_COUNT"):  # a size quota (and how the tests fill the disk)
        conn.execute(f"PRAGMA max_page_count = {int(config['MAX_PAGE_COUNT'])}")
    synchronous = str(config["SYNCHRONOUS"]).upper()
    if synchronous not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ValueError(f"SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA, not {synchronous}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def set_deadline(conn: sqlite3.Connection, limit_ms: int) -> None:
    """Interrupt any statement still running `limit_ms` from now (a runaway query)."""
    deadline = clock() + limit_ms / 1000
    conn.set_progress_handler(lambda: clock() > deadline, PROGRESS_STEPS)


def file_identity(database: str):
    """What tells a replaced, rewritten or re-permissioned file from the one a connection holds."""
    path = database_file(database)
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return stat.st_dev, stat.st_ino, stat.st_ctime_ns


def kept_connection(app) -> sqlite3.Connection:
    """The calling thread's connection for `app`, opened on its first request and kept.

    Opening one (file, WAL index, schema, pragmas) costs more than a small query. It is
    reopened after a fork, a change of settings, or a change of the file itself
    (ctime), so requests behave as if each had opened its own.
    """
    config, kept = app.config, app.extensions["usage_server.connections"]
    settings = tuple(config.get(name) for name in KEPT_SETTINGS)
    held = getattr(kept, "held", None)
    if held is not None and held[0] == (os.getpid(), settings, file_identity(config["DATABASE"])):
        return held[1]
    kept.held = None
    if held is not None and held[0][0] == os.getpid():  # never close a parent's connection
        held[1].close()
    conn = connect(config)
    kept.held = ((os.getpid(), settings, file_identity(config["DATABASE"])), conn)
    return conn


def get_db() -> sqlite3.Connection:
    """This request's connection (the thread's kept one), with this request's deadline."""
    if "db" not in g:
        if has_request_context():
            g.db = kept_connection(current_app._get_current_object())
            g.db_kept = True
        else:
            g.db = connect(current_app.config)
        set_deadline(g.db, current_app.config["QUERY_TIME_LIMIT_MS"])
    return g.db


def close_db(exc=None) -> None:
    """Closes the connection, or hands a kept one back clean: no deadline, no transaction."""
    db = g.pop("db", None)
    if db is None:
        return
    if not g.pop("db_kept", False):
        db.close()
        return
    db.set_progress_handler(None, 0)
    if db.in_transaction:  # a request that failed inside a transaction
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            current_app.extensions["usage_server.connections"].held = None
            db.close()


@contextmanager
def write_transaction(conn: sqlite3.Connection):
    """BEGIN IMMEDIATE: take the write lock up front, so a busy database fails fast."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (disk full, interrupt)
            conn.execute("ROLLBACK")
        raise


@contextmanager
def read_snapshot(conn: sqlite3.Connection):
    """One read transaction: every query of a response sees the same committed data."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


@contextmanager
def start_up_connection(config, create: bool):
    """A connection for start-up work (schema upgrades, rollup upkeep), closed after it.

    The path is checked first and the file created only when `create`. It waits as long
    as another starting process holds the write lock, whatever BUSY_TIMEOUT_MS says, and
    any database error is reported as a DatabaseSetupError naming the database.
    """
    check_database_path(config["DATABASE"])
    try:
        conn = connect({**config, "BUSY_TIMEOUT_MS": START_UP_WAIT_MS}, create=create)
        try:
            yield conn
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseSetupError(f"cannot use the database {config['DATABASE']}: {exc}") from None


def init_app(app) -> None:
    app.extensions["usage_server.connections"] = threading.local()
    app.teardown_appcontext(close_db)
