"""What is particular to SQLite: error names, the catalogue of tables, running a script in a
transaction, and what /health reports. Another engine gets a module like this one."""
import sqlite3

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
    return {"sqliteVersion": sqlite3.sqlite_version, "pragmas": pragmas}


def database_name(conn: sqlite3.Connection) -> str:
    """The file a connection has open, for messages."""
    return conn.execute("PRAGMA database_list").fetchone()["file"] or ":memory:"
