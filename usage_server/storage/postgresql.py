"""What is particular to PostgreSQL: a connection pool per worker process, the dialect
(the server's SQLite-style statements in psycopg's parameter style), transactions,
errors, the catalogue of tables, and what /health reports.

The server's statements are written once, in queries.py. They run here unchanged but for
a few mechanical rewrites made once per statement (`dialect`): `:name` and `?` become
psycopg's placeholders, `%` is escaped, `:x IS NULL` gets a type, and SQLite's
`json_each(:list)` becomes `jsonb_array_elements_text`. The bucket labels' `strftime` is a
function of the schema (postgresql/0001_initial.sql), always in UTC.
"""
import os
import re
import shlex
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors, sql

from .sqlite import DatabaseSetupError
from psycopg.pq import TransactionStatus
from psycopg.types.numeric import Int8Dumper, NumericLoader
from psycopg_pool import ConnectionPool, PoolTimeout

NAME = "postgresql"
URL_PREFIXES = ("postgresql://", "postgres://")
WRITE_LOCK = 7_570_656_563_712_946_017  # pg_advisory_xact_lock key: one writer at a time, as in SQLite
POOL_SIZE = 8  # per worker process; a sync worker uses one at a time
START_UP_WAIT_MS = 600_000

NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
NULL_TEST = re.compile(r"(?<![:\w])(:[A-Za-z_]\w*) IS NULL")
JSON_EACH = re.compile(r"json_each\((:[A-Za-z_]\w*)\)")
BULK_INSERT = re.compile(r"\s*INSERT INTO (\w+) \(([\w\s,]+)\)\s*VALUES \(([?,\s]+)\)(.*)", re.S)


def is_url(database: str) -> bool:
    return isinstance(database, str) and database.startswith(URL_PREFIXES)


@lru_cache(maxsize=None)
def dialect(statement: str) -> str:
    """A statement of queries.py as psycopg runs it on PostgreSQL."""
    text = statement.replace("%", "%%")
    text = NULL_TEST.sub(r"CAST(\1 AS text) IS NULL", text)  # a NULL parameter has no type of its own
    text = JSON_EACH.sub(r"jsonb_array_elements_text(CAST(\1 AS jsonb)) AS each(value)", text)
    return NAMED.sub(r"%(\1)s", text).replace("?", "%s")


@dataclass(frozen=True)
class Bulk:
    """How executemany stores many rows: one COPY, into the table itself or, for an INSERT
    with ON CONFLICT, into a staging table that one INSERT then empties into the table."""

    copy: str
    create: str | None = None
    insert: str | None = None


@lru_cache(maxsize=None)
def bulk_form(statement: str) -> Bulk | None:
    """`INSERT INTO t (columns) VALUES (?, ...) [ON CONFLICT ...]` in bulk form; None for others.

    A plain INSERT becomes a COPY into the table: the same defaults, constraints and
    triggers. With ON CONFLICT, the rows are copied, numbered, into the session's own
    staging table (TEMP, empty at every commit) and moved by one INSERT ... SELECT in that
    order, so they must not repeat a key that ON CONFLICT DO UPDATE updates (the server's
    never do: rollup rows are summed per key first). Either way rows go in in the order
    given, and identity columns count in that order.
    """
    match = BULK_INSERT.fullmatch(statement)
    if match is None:
        return None
    table, names, marks, rest = match.groups()
    names = [name.strip() for name in names.split(",")]
    if [mark.strip() for mark in marks.split(",")] != ["?"] * len(names):
        return None
    columns, rest = ", ".join(names), rest.strip()
    if not rest:
        return Bulk(copy=f"COPY {table} ({columns}) FROM STDIN")
    stage = f"bulk_{table}"
    return Bulk(
        copy=f"COPY {stage} ({columns}, bulk_order) FROM STDIN",
        create=(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                f"SELECT {columns}, 0::bigint AS bulk_order FROM {table} WITH NO DATA"),
        insert=(f"WITH moved AS (DELETE FROM {stage} RETURNING {columns}, bulk_order) "
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM moved ORDER BY bulk_order {rest}"))


class Row(tuple):
    """A result row read by position and by column name, as sqlite3.Row is."""

    __slots__ = ()
    columns: dict = {}

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self.columns[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.columns)


@lru_cache(maxsize=4096)
def row_type(names: tuple[str, ...]) -> type:
    return type("Row", (Row,), {"__slots__": (), "columns": {name: index for index, name in enumerate(names)}})


def row_factory(cursor):
    make = row_type(tuple(column.name for column in cursor.description or ()))
    return make


class ExactNumericLoader(NumericLoader):
    """SUM over BIGINT is NUMERIC in PostgreSQL: whole values come back as int, as in SQLite.

    A whole number's text is read by int() straight away: a year by day reads over a thousand
    sums, and through Decimal each cost three times as much."""

    def load(self, data):
        try:
            return int(bytes(data))
        except ValueError:  # a fraction, or NaN
            value = super().load(data)
            return int(value) if value == value.to_integral_value() else value


def configure(raw: psycopg.Connection) -> None:
    raw.row_factory = row_factory
    raw.adapters.register_dumper(int, Int8Dumper)  # `:lo * 1000000` must not overflow int4
    raw.adapters.register_loader("numeric", ExactNumericLoader)


class Connection:
    """A psycopg connection that runs the server's statements; rows read like sqlite3.Row."""

    def __init__(self, raw: psycopg.Connection, busy_timeout_ms: int, pool: ConnectionPool | None = None,
                 database: str = "", deadline_ms: int | None = None):
        self.raw, self.busy_timeout_ms, self.pool = raw, busy_timeout_ms, pool
        self.database = database  # the URL as configured, for messages
        self.deadline_ms = deadline_ms  # the statement_timeout set on this session, when known

    def execute(self, statement: str, params=()):
        return self.raw.execute(dialect(statement), params)

    def executemany(self, statement: str, rows) -> None:
        """An INSERT of plain values goes through COPY (bulk_form): about a quarter less time
        per 1,000-event batch than psycopg's pipelined statement per row."""
        bulk = bulk_form(statement)
        with self.raw.cursor() as cursor:
            if bulk is None:
                cursor.executemany(dialect(statement), rows)
                return
            staged = bulk.create is not None
            if staged:
                cursor.execute(bulk.create)
            with cursor.copy(bulk.copy) as copy:
                for order, row in enumerate(rows):
                    copy.write_row((*row, order) if staged else row)  # staged rows numbered, for their order
            if staged:
                cursor.execute(bulk.insert)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        if self.pool is not None:
            self.pool.putconn(self.raw)
        else:
            self.raw.close()


def connect(config, create: bool = False) -> Connection:
    """A connection of its own (commands, start-up), outside any pool."""
    raw = psycopg.connect(config["DATABASE"], autocommit=True, connect_timeout=connect_timeout(config))
    configure(raw)
    return Connection(raw, int(config["BUSY_TIMEOUT_MS"]), database=config["DATABASE"])


def connect_timeout(config) -> int:
    return max(2, int(config["BUSY_TIMEOUT_MS"]) // 1000)


_pools: dict = {}
_pools_lock = threading.Lock()


DEADLINE = "SELECT set_config('statement_timeout', %s, false)"


def deadline_check(limit_ms: int):
    """The pool's check of each connection it hands out, in the one round trip that also sets
    the request's deadline: a broken connection fails it and is replaced."""
    def check(raw: psycopg.Connection) -> None:
        raw.execute(DEADLINE, (str(limit_ms),))

    return check


def pool_for(config) -> ConnectionPool:
    """This process's pool for the database: made after a fork, never shared with a parent."""
    key = (os.getpid(), config["DATABASE"], int(config["BUSY_TIMEOUT_MS"]), int(config["QUERY_TIME_LIMIT_MS"]))
    pool = _pools.get(key)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = ConnectionPool(
                    config["DATABASE"], min_size=1, max_size=POOL_SIZE, open=True, configure=configure,
                    kwargs={"autocommit": True, "connect_timeout": connect_timeout(config)},
                    check=deadline_check(int(config["QUERY_TIME_LIMIT_MS"])),
                    timeout=int(config["BUSY_TIMEOUT_MS"]) / 1000,
                    name=f"usage-server-{os.getpid()}")
    return pool


def close_pools(database: str | None) -> None:
    with _pools_lock:
        for key in [key for key in _pools if key[0] == os.getpid() and database in (None, key[1])]:
            _pools.pop(key).close()


def request_connection(app) -> Connection:
    """A pooled connection for one request, with the request's deadline already set by the
    pool's check; a broken one is replaced before it is handed out."""
    pool = pool_for(app.config)
    return Connection(pool.getconn(), int(app.config["BUSY_TIMEOUT_MS"]), pool, app.config["DATABASE"],
                      deadline_ms=int(app.config["QUERY_TIME_LIMIT_MS"]))


def set_deadline(conn: Connection, limit_ms: int) -> None:
    """statement_timeout: a statement still running after `limit_ms` is cancelled (a 503).
    A round trip only when the session does not have that limit yet."""
    if conn.deadline_ms != int(limit_ms):
        conn.raw.execute(DEADLINE, (str(int(limit_ms)),))
        conn.deadline_ms = int(limit_ms)


def release(app, conn: Connection) -> None:
    """Hands a request's connection back clean: no transaction. Its deadline stays: the pool's
    check sets the next request's before handing it out."""
    try:
        if conn.in_transaction:
            conn.raw.execute("ROLLBACK")
    except psycopg.Error:
        conn.raw.close()  # the pool discards a closed connection
    conn.close()


@contextmanager
def write_transaction(conn: Connection):
    """Read committed, with every writer serialised by one advisory lock taken first: each
    statement after it sees every batch committed before, so an event id is never stored
    twice and rollup upserts never deadlock. A writer that waits longer than lock_timeout
    (the busy timeout) fails fast, as SQLite's BEGIN IMMEDIATE does."""
    conn.raw.execute("BEGIN")
    try:
        conn.raw.execute("SELECT set_config('lock_timeout', %s, true)", (str(conn.busy_timeout_ms),))
        conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        yield conn
        conn.raw.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.raw.execute("ROLLBACK")
        raise


@contextmanager
def read_snapshot(conn: Connection):
    """One REPEATABLE READ snapshot: every query of an answer sees the same committed batches."""
    conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.raw.execute("COMMIT")


# why the database cannot answer, by the class of psycopg's error (the API answers each with a 503)
UNAVAILABLE_REASONS = (
    (errors.QueryCanceled, "time_limit"),  # statement_timeout
    (errors.LockNotAvailable, "busy"),  # lock_timeout
    (errors.DeadlockDetected, "busy"),
    (errors.SerializationFailure, "busy"),
    (errors.ReadOnlySqlTransaction, "read_only"),
    (errors.DiskFull, "full"),
    (errors.InsufficientResources, "full"),
    (PoolTimeout, "unavailable"),
    (psycopg.OperationalError, "unavailable"),  # connection refused, lost, server shutting down
    (errors.AdminShutdown, "unavailable"),
    (errors.UndefinedTable, "unavailable"),  # the schema is gone
)


def unavailable_reason(exc: BaseException) -> str | None:
    for kind, reason in UNAVAILABLE_REASONS:
        if isinstance(exc, kind):
            return reason
    return None


def database_error(exc: BaseException) -> bool:
    return isinstance(exc, (psycopg.Error, PoolTimeout))


TABLE_NAMES = """
SELECT tablename
FROM pg_tables
WHERE schemaname = current_schema()
"""


def table_names(conn: Connection) -> set[str]:
    return {row[0] for row in conn.raw.execute(TABLE_NAMES)}


IDENTITY_COLUMNS = """
SELECT table_name, column_name
FROM information_schema.columns
WHERE table_schema = current_schema()
  AND is_identity = 'YES'
  AND identity_generation = 'BY DEFAULT'
ORDER BY table_name, column_name
"""


def backup(config, dest: str) -> str:
    """PostgreSQL is backed up by its own tool, which takes a consistent snapshot while serving."""
    command = ["pg_dump", "--format=custom", f"--file={dest}", f"--dbname={redacted(config['DATABASE'])}"]
    raise DatabaseSetupError(
        "a PostgreSQL database is backed up with pg_dump (a consistent snapshot; the server keeps serving):\n  "
        + shlex.join(command) + "\n(give the password by PGPASSWORD or ~/.pgpass)")


def check_restore_source(config, source: str) -> str:
    """PostgreSQL restores with its own tool: say how."""
    restore(config, source)


def restore(config, source: str) -> None:
    command = ["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
               f"--dbname={redacted(config['DATABASE'])}", source]
    raise DatabaseSetupError(
        "a PostgreSQL database is restored with pg_restore from a pg_dump --format=custom file:\n  "
        + shlex.join(command) + "\n(give the password by PGPASSWORD or ~/.pgpass; then `usage-server migrate`)")


def database_size(conn: Connection) -> int:
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def checkpoint(conn: Connection) -> None:
    """Nothing to do: PostgreSQL's own checkpointer never blocks a writer or a reader."""


def sync_identities(conn: Connection) -> None:
    """After rows were inserted with explicit ids (copy-to), each identity sequence continues
    after the largest id stored, so the next row the server adds gets a new one."""
    for table, column in conn.raw.execute(IDENTITY_COLUMNS).fetchall():
        statement = sql.SQL("SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE(MAX({column}), 1), "
                            "MAX({column}) IS NOT NULL) FROM {table}").format(
            column=sql.Identifier(column), table=sql.Identifier(table))
        conn.raw.execute(statement, (sql.Identifier(table).as_string(conn.raw), column))


def run_script(conn: Connection, script: str) -> None:
    """A migration file, in the caller's transaction (PostgreSQL's DDL is transactional)."""
    conn.raw.execute(script)


def drop_all_tables(conn: Connection) -> None:
    with write_transaction(conn):
        for table in sorted(table_names(conn)):
            conn.raw.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        conn.raw.execute("DROP FUNCTION IF EXISTS strftime(TEXT, BIGINT, TEXT, TEXT, TEXT)")


SETTINGS_IN_EFFECT = ("server_version", "statement_timeout", "default_transaction_isolation", "TimeZone")


def engine_status(conn: Connection) -> dict:
    """For /health: PostgreSQL's version and the settings in effect on this connection."""
    settings = {name: conn.raw.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
                for name in SETTINGS_IN_EFFECT}
    return {"engine": NAME, "version": settings.pop("server_version"), "settings": settings}


def database_name(conn: Connection) -> str:
    """The database as its setting names it, without the password (psycopg's dsn lists
    every connection parameter instead)."""
    return redacted(conn.database or conn.raw.info.dsn)


def redacted(url: str) -> str:
    """A URL without its password, for messages and logs."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def start_up_config(config) -> dict:
    return {**config, "BUSY_TIMEOUT_MS": START_UP_WAIT_MS}


def same_database(first: str, second: str) -> bool:
    return first == second


def database_exists(database: str) -> bool:
    """A server's database exists unless connecting says otherwise (and then says why)."""
    return True


def check_database_path(database: str) -> None:
    """A URL is checked by connecting to it: nothing to refuse before."""
    parts = urlsplit(database)
    if not parts.hostname and not parts.path.strip("/"):
        raise DatabaseSetupError(f"{redacted(database)} names no server and no database")
