"""What is particular to SQLite: opening a file with the server's pragmas, a kept connection
per worker thread, transactions, error names, the catalogue of tables, running a script in
a transaction, and what /health reports. PostgreSQL has a module like this one."""
import fcntl
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import pathname2url, url2pathname

import click

NAME = "sqlite"
Row = sqlite3.Row
START_UP_WAIT_MS = 600_000  # a process starting while another upgrades or builds rollups waits for it
PROGRESS_STEPS = 10_000  # SQLite VM steps between two deadline checks
KEPT_SETTINGS = ("DATABASE", "BUSY_TIMEOUT_MS", "SYNCHRONOUS", "MAX_PAGE_COUNT")  # fixed at connect
clock = time.monotonic  # the deadline's time source; tests swap in one that counts the checks


class DatabaseSetupError(click.ClickException):
    """A database that cannot be used, reported before anything is created."""


class Connection(sqlite3.Connection):
    """An SQLite connection that knows its WAL file and checkpoint lock (set at connect)."""

    lock_path: str | None = None
    changes_at_checkpoint = 0  # total_changes when it last checkpointed


# SQLite 3.7.0 to 3.51.2 can corrupt a WAL database when connections checkpoint and write at
# once (fixed in 3.51.3). So no connection checkpoints by itself (wal_autocheckpoint = 0): a
# writer checkpoints after its commit once it changed CHECKPOINT_CHANGES rows since its last
# checkpoint, PASSIVE (never waiting for readers), holding a lock that makes it the only
# checkpointer of all processes; if another holds it, it skips (its next commit tries again).
# (The WAL file's size is no measure: it keeps its size when SQLite starts it over.)
WAL_RESET_BUG = ((3, 7, 0), (3, 51, 2))
CHECKPOINT_CHANGES = 2_000  # about SQLite's automatic checkpoint (1000 pages) for batches of events
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # a WAL reset after a checkpoint shrinks the file to this
_checkpoint_thread_lock = threading.Lock()  # flock() is per open file: threads of a process share it
_lock_files: dict[str, int] = {}  # lock path -> descriptor, kept open for the process's life


def has_wal_reset_bug(version: str = sqlite3.sqlite_version) -> bool:
    low, high = WAL_RESET_BUG
    return low <= tuple(int(part) for part in version.split(".")[:3]) <= high


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



def same_database(first: str, second: str) -> bool:
    """The same file, however each setting spells it (":memory:" is never shared)."""
    files = database_file(first), database_file(second)
    if None in files:
        return False
    if all(path.exists() for path in files):
        return os.path.samefile(*files)
    return os.path.abspath(files[0]) == os.path.abspath(files[1])


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
        database_uri(config["DATABASE"], create), isolation_level=None, check_same_thread=False, uri=True,
        factory=Connection,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(config['BUSY_TIMEOUT_MS'])}")
    try:
        wal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorname != "SQLITE_READONLY":
            raise
        wal = False
    path = conn.execute("PRAGMA database_list").fetchone()["file"]
    if wal and path and not conn.execute("PRAGMA query_only").fetchone()[0]:
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints only under the lock (see above)
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.lock_path = f"{path}-checkpoint"
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
    """What tells a replaced or re-permissioned file from the one a connection holds. Not its
    ctime: every checkpoint writes the file, and a connection reopened after each one loses
    its page cache and its prepared statements (SQLite itself notices content written by
    others)."""
    path = database_file(database)
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return stat.st_dev, stat.st_ino, stat.st_mode, stat.st_uid, stat.st_gid



def kept_connection(app) -> sqlite3.Connection:
    """The calling thread's connection for `app`, opened on its first request and kept.

    Opening one (file, WAL index, schema, pragmas) costs more than a small query. It is
    reopened after a fork, a change of settings, or another file at the path (or its
    permissions changed), so requests behave as if each had opened its own.
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
    if getattr(conn, "lock_path", None) is not None and conn.total_changes - conn.changes_at_checkpoint >= CHECKPOINT_CHANGES:
        checkpoint(conn, wait=False)



@contextmanager
def read_snapshot(conn: sqlite3.Connection):
    """One read transaction: every query of a response sees the same committed data."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")



def request_connection(app) -> sqlite3.Connection:
    return kept_connection(app)


def release(app, conn: sqlite3.Connection) -> None:
    """Hands a kept connection back clean: no deadline, no transaction (or drops it)."""
    conn.set_progress_handler(None, 0)
    if conn.in_transaction:  # a request that failed inside a transaction
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            app.extensions["usage_server.connections"].held = None
            conn.close()


def close_pools(database: str | None) -> None:
    """SQLite keeps one connection per thread, no pool: nothing to close."""


def database_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError)


def start_up_config(config) -> dict:
    return {**config, "BUSY_TIMEOUT_MS": START_UP_WAIT_MS}


# why the database could not answer, by SQLite's error name (the API answers each with a 503)
UNAVAILABLE_REASONS = {
    "SQLITE_BUSY": "busy",
    "SQLITE_LOCKED": "busy",
    "SQLITE_FULL": "full",
    "SQLITE_READONLY": "read_only",
    "SQLITE_INTERRUPT": "time_limit",
}
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}  # PRAGMA synchronous levels
SETTINGS_IN_EFFECT = """
SELECT journal_mode, synchronous, timeout AS busy_timeout, foreign_keys
FROM pragma_journal_mode(), pragma_synchronous(), pragma_busy_timeout(), pragma_foreign_keys()
"""
TABLE_NAMES = """
SELECT name
FROM sqlite_master
WHERE type = 'table'
  AND name NOT LIKE 'sqlite_%'
"""


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database cannot answer now ("busy", "full", "read_only", "time_limit", or
    "unavailable" for a file that is gone or damaged), or None when `exc` is not an outage
    but a bug (a constraint, a misused connection): those stay 500s."""
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        return UNAVAILABLE_REASONS.get(getattr(exc, "sqlite_errorname", None), "unavailable")
    return None


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute(TABLE_NAMES)}


def statements(script: str) -> list[str]:
    """A script's statements one by one, so that they run inside the caller's transaction
    (executescript would commit first). SQLite's own parser decides where each one ends."""
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if any(line.strip() and not line.strip().startswith("--") for line in pending.splitlines()):
        raise ValueError(f"the script ends inside a statement: {pending.strip()[:60]!r}")
    return found


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """A migration file, statement by statement, in the caller's transaction."""
    for statement in statements(script):
        conn.execute(statement)


def database_size(conn: sqlite3.Connection) -> int:
    """The file's pages and its WAL, in bytes."""
    pages = conn.execute("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()").fetchone()[0]
    wal = database_name(conn) + "-wal"
    return pages + (os.path.getsize(wal) if os.path.exists(wal) else 0)


def checkpoint(conn: Connection, wait: bool = True) -> bool:
    """Copy committed pages from the WAL into the database as far as no reader needs them,
    never waiting for a reader (PASSIVE), as the only checkpointer of every process (the
    lock file beside the database). Bulk writers call it between their steps (`wait`: for
    another checkpointer to finish); a writer after its commit skips it when another is
    checkpointing. Whether it ran."""
    if getattr(conn, "lock_path", None) is None:  # read-only, or not in WAL mode: nothing to do
        return False
    if not _checkpoint_thread_lock.acquire(blocking=wait):
        return False
    try:
        descriptor = _lock_files.get(conn.lock_path)
        if descriptor is None:
            descriptor = _lock_files[conn.lock_path] = os.open(conn.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            conn.changes_at_checkpoint = conn.total_changes
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
        return True
    finally:
        _checkpoint_thread_lock.release()


def backup(config, dest: str) -> str:
    """A consistent copy of the live database into the new file `dest`, checked; the server
    keeps serving and writing meanwhile (WAL: the copy is one read transaction's snapshot)."""
    target = Path(dest)
    if target.exists():
        raise DatabaseSetupError(f"{target} exists: back up to a new file")
    if not target.parent.is_dir():
        raise DatabaseSetupError(f"directory {target.parent} does not exist")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    source = connect(config)
    try:
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy)  # every page in one step: one snapshot, however long it takes
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            check = integrity(copy)
        finally:
            copy.close()
    finally:
        source.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise DatabaseSetupError(f"the copy failed its integrity check: {check}")
    os.replace(partial, target)
    return check


def integrity(conn: sqlite3.Connection) -> str:
    """PRAGMA integrity_check's verdict: "ok", or its first problems on one line."""
    return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check(10)"))


def check_restore_source(config, source: str) -> str:
    """The setting a backup file is read through (read-only), once it is an intact SQLite file."""
    check_database_path(source)
    if not Path(source).is_file():
        raise DatabaseSetupError(f"{source} does not exist")
    uri = f"file:{pathname2url(os.path.abspath(source))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        check = integrity(conn)
    except sqlite3.DatabaseError as exc:
        raise DatabaseSetupError(f"{source} is not a usable SQLite database: {exc}") from None
    finally:
        conn.close()
    if check != "ok":
        raise DatabaseSetupError(f"{source} failed its integrity check: {check}")
    return uri


def restore(config, source: str) -> None:
    """Copy the checked backup `source` over the configured database, in one write transaction
    of SQLite's backup API (servers wait for it, then read the restored data)."""
    target = connect(config, create=True)
    try:
        reader = sqlite3.connect(check_restore_source(config, source), uri=True)
        try:
            reader.backup(target)
        finally:
            reader.close()
        target.execute("PRAGMA journal_mode = WAL")
    finally:
        target.close()


def sync_identities(conn: sqlite3.Connection) -> None:
    """Nothing to do: an INTEGER PRIMARY KEY goes on after the largest id stored."""


def drop_all_tables(conn: sqlite3.Connection) -> None:
    """Every table, in one transaction; foreign keys are off meanwhile, so the order does not matter."""
    conn.execute("PRAGMA foreign_keys = OFF")  # has no effect inside a transaction: set before BEGIN
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table in sorted(table_names(conn)):
            conn.execute(f'DROP TABLE "{table}"')
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("PRAGMA foreign_keys = ON")


def engine_status(conn: sqlite3.Connection) -> dict:
    """For /health: SQLite's version and the settings in effect on this connection."""
    pragmas = dict(conn.execute(SETTINGS_IN_EFFECT).fetchone())
    pragmas["synchronous"] = SYNCHRONOUS_NAMES[pragmas["synchronous"]]
    status = {"engine": NAME, "version": sqlite3.sqlite_version, "sqliteVersion": sqlite3.sqlite_version,
              "pragmas": pragmas}
    if has_wal_reset_bug():
        status["warnings"] = [
            f"SQLite {sqlite3.sqlite_version} has the WAL-reset bug of 3.7.0 to 3.51.2 (connections that checkpoint "
            "and write at once can corrupt the database; fixed in 3.51.3): this server avoids it by letting one "
            "connection at a time checkpoint (automatic checkpoints off)"]
    return status


def database_name(conn: sqlite3.Connection) -> str:
    """The file a connection has open, for messages."""
    return conn.execute("PRAGMA database_list").fetchone()["file"] or ":memory:"
