"""Schema versions: numbered SQL steps per engine (sqlite/0001_initial.sql, ...), applied in
order at start-up and by `usage-server migrate`, each recorded in the schema_version table.

A table, not an engine's own counter, holds the version, so every engine keeps it alike.
A database made before versions were recorded has the tables but no version: it counts as
version 0, and the idempotent first step brings it to the baseline without touching a row.
"""
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

from ..connections import Connection, DatabaseSetupError, engine_of, write_transaction

FOLDER = Path(__file__).resolve().parent  # one folder of steps per engine: sqlite/, postgresql/
STEP_NAME = re.compile(r"(\d{4})_\w+\.sql")
VERSION_TABLE = "schema_version"
STORED_VERSION = """
SELECT COALESCE(MAX(version), 0)
FROM schema_version
"""
RECORD_VERSION = """
INSERT INTO schema_version (version, name, applied_at)
VALUES (:version, :name, :applied_at)
"""


def steps(engine: str = "sqlite") -> list[tuple[int, Path]]:
    """The migration files of an engine, numbered 1, 2, 3 ... without a gap."""
    folder = FOLDER / engine
    found = sorted((int(match[1]), path) for path in folder.iterdir() if (match := STEP_NAME.fullmatch(path.name)))
    if [version for version, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations in {folder} are not numbered 1 to {len(found)}")
    return found


LATEST_VERSION = steps("sqlite")[-1][0]
if steps("postgresql")[-1][0] != LATEST_VERSION:
    raise RuntimeError("every engine has the same numbered migrations")


class Upgrade(NamedTuple):
    found: int  # 0: none recorded (a new database, or one made before versions)
    reached: int


class NewerSchemaError(DatabaseSetupError):
    """A database written by a newer release: this one might misread it, so it stops."""

    def __init__(self, database: str, found: int):
        super().__init__(
            f"the database {database} has schema version {found}, newer than this release of usage-server "
            f"knows (up to {LATEST_VERSION}): it was upgraded by a newer release; run that release or a later one"
        )
        self.found = found


def checked_version(conn: Connection) -> int:
    """The database's schema version (0 when none is recorded), if this release knows it."""
    engine = engine_of(conn)
    found = conn.execute(STORED_VERSION).fetchone()[0] if VERSION_TABLE in engine.table_names(conn) else 0
    if found > LATEST_VERSION:
        raise NewerSchemaError(engine.database_name(conn), found)
    return found


def migrate(conn: Connection, rebuild_rollups: Callable[[Connection], None]) -> Upgrade:
    """Bring the schema to LATEST_VERSION, every step and its record in one transaction.

    Several processes may start at once: the write lock (BEGIN IMMEDIATE) lets one
    upgrade, and the others then find the version recorded and do nothing. A database
    already up to date is only read, so a read-only copy starts. `rebuild_rollups(conn)`
    runs in the same transaction when a database made before versions lacked some tables:
    rollups added by later releases must be computed from its events.
    """
    if checked_version(conn) == LATEST_VERSION:
        return Upgrade(LATEST_VERSION, LATEST_VERSION)
    engine = engine_of(conn)
    with write_transaction(conn):
        found = checked_version(conn)
        before = engine.table_names(conn)
        for version, path in steps(engine.NAME)[found:]:
            engine.run_script(conn, path.read_text(encoding="utf-8"))
            conn.execute(RECORD_VERSION, {"version": version, "name": path.stem,
                                          "applied_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        made_before_versions = found == 0 and "usage_event" in before
        if made_before_versions and engine.table_names(conn) - before - {VERSION_TABLE}:
            rebuild_rollups(conn)
    return Upgrade(found, LATEST_VERSION)


def drop_schema(conn: Connection) -> None:
    """Every table and its data: `init-db --drop` starts over from version 0."""
    engine_of(conn).drop_all_tables(conn)
