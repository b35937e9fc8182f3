"""copy-to: everything one database holds (owners, keys, model configs, price overrides,
events) copied into another, of either engine, whose rollups are then rebuilt.

Both ends go through the storage layer: one read snapshot of the source, one write
transaction on the target. The target is checked first, inside that transaction: every row
it holds must be the source's row, so a re-run finds nothing new and a database holding other data is refused
with nothing changed. Rows keep their ids and keys their hashes, so raw keys keep working.
"""
import time
from typing import Callable

import click

from . import queries, retention
from .ingest import rebuild_rollups
from .storage import (Connection, migrate, read_snapshot, redacted, same_database, start_up_connection,
                      sync_identities, write_transaction)

BATCH = 10_000  # rows read, compared and written at a time
PROGRESS_ROWS = 100_000  # a progress line each time this many more rows of a table are done

Echo = Callable[[str], None]


class OtherDataError(click.ClickException):
    """The target holds rows the source does not: copying would mix two databases."""


def copy_to(source: Connection, config, target: str, echo: Echo) -> dict[str, int]:
    """Copy the configured database (open as `source`) into `target`, creating its schema
    (or upgrading it, as any start-up would); returns the rows copied per table."""
    if same_database(config["DATABASE"], target):
        raise click.ClickException(f"{redacted(target)} is the configured database itself: nothing to copy")
    echo(f"Copying {redacted(config['DATABASE'])} into {redacted(target)}.")
    with start_up_connection({**config, "DATABASE": target}, create=True) as conn:
        migrate(conn, rebuild_rollups)
        return copy_database(source, conn, redacted(target), echo)


def copy_database(source: Connection, target: Connection, name: str, echo: Echo) -> dict[str, int]:
    """Copy the rows the target lacks and rebuild its rollups, all in one transaction."""
    with read_snapshot(source), write_transaction(target):
        check_target(source, target, name, echo)
        echo("The target holds nothing but rows of this database: copying.")
        copied = {table: copy_table(source, target, table, echo) for table in queries.COPIED_TABLES}
        if not any(copied.values()):
            echo("Nothing new: the target already holds all of it; its rollups are unchanged.")
            return copied
        sync_identities(target)
        started = time.perf_counter()
        copy_pruned_usage(source, target)
        rebuild_rollups(target)
        bump_versions(source, target)
        echo(f"Rebuilt the target's rollups from {row_count(target, 'usage_event'):,} events"
             f" in {time.perf_counter() - started:.1f} s.")
    return copied


def copy_pruned_usage(source: Connection, target: Connection) -> None:
    """After a prune, the usage of the deleted events lives only in the rollups: the retention
    horizon and the quarter hours before it are copied as they are (the rebuild that follows
    keeps them and sums the coarser rollups from them)."""
    row = source.execute(retention.RETENTION).fetchone()
    if row is None:
        return
    target.execute(retention.SET_RETENTION, {"horizon_us": row["horizon_us"], "keep_days": row["keep_days"],
                                             "last_pruned_on": row["last_pruned_on"]})
    horizon = {"horizon": row["horizon_us"] // 1_000_000}
    target.execute(queries.CLEAR_QUARTERS_BEFORE, horizon)
    quarters = source.execute(queries.QUARTERS_BEFORE, horizon).fetchall()
    if quarters:
        target.executemany(queries.UPSERT_ROLLUP[900], [tuple(quarter) for quarter in quarters])


def check_target(source: Connection, target: Connection, name: str, echo: Echo) -> None:
    """Refuse a target with a row the source lacks or holds otherwise, before writing anything."""
    for table, (width, _, columns) in queries.COPIED_TABLES.items():
        for page in pages(target, table, progress(echo, f"{table} in the target", row_count(target, table), "checked")):
            theirs = rows_in_range(source, table, [row[:width] for row in page])
            for row in page:
                key = row[:width]
                if theirs.get(key) == row:
                    continue
                what = ", ".join(f"{column}={value!r}" for column, value in zip(columns, key))
                found = "differs from the source's" if key in theirs else "is not in the source"
                raise OtherDataError(
                    f"the target {name} already holds other data: {table} ({what}) {found}. Nothing was "
                    "copied. Copy into a new database, or one an earlier copy-to of this database filled.")


def copy_table(source: Connection, target: Connection, table: str, echo: Echo) -> int:
    """Write the source's rows the target lacks, BATCH at a time."""
    width, total, copied = queries.COPIED_TABLES[table][0], row_count(source, table), 0
    for page in pages(source, table, progress(echo, table, total, "read")):
        have = rows_in_range(target, table, [row[:width] for row in page])
        fresh = [row for row in page if have.get(row[:width]) != row]
        if fresh:
            target.executemany(queries.COPY_ROWS[table], fresh)
        copied += len(fresh)
    echo(f"{table}: {copied:,} new of {total:,}")
    return copied


def pages(conn: Connection, table: str, report: Callable[[int, int], None]):
    """The table's rows in copy order as tuples of its copied columns, BATCH at a time;
    report(rows done before, rows done) after each page."""
    _, order, columns = queries.COPIED_TABLES[table]
    positions = [(columns + tuple(name for name in order if name not in columns)).index(name) for name in order]
    rows, done = conn.execute(queries.COPY_FIRST_PAGE[table], (BATCH,)).fetchall(), 0
    while rows:
        yield [tuple(row)[:len(columns)] for row in rows]
        done += len(rows)
        report(done - len(rows), done)
        after = [rows[-1][position] for position in positions]
        rows = conn.execute(queries.COPY_NEXT_PAGE[table], (*after, BATCH)).fetchall()


def progress(echo: Echo, what: str, total: int, doing: str) -> Callable[[int, int], None]:
    """A line each time PROGRESS_ROWS more rows are done (a large table may take minutes)."""
    def report(before: int, done: int) -> None:
        if done < total and done // PROGRESS_ROWS > before // PROGRESS_ROWS:
            echo(f"  {what}: {done:,} of {total:,} {doing}")
    return report


def rows_in_range(conn: Connection, table: str, keys: list[tuple]) -> dict[tuple, tuple]:
    """The rows whose keys lie between the least and the greatest of `keys`, by key. Python
    orders ints, str (by code point, as UTF-8 bytes sort) and tuples as both engines do."""
    width = queries.COPIED_TABLES[table][0]
    rows = conn.execute(queries.COPY_KEY_RANGE[table], (*min(keys), *max(keys))).fetchall()
    return {tuple(row)[:width]: tuple(row) for row in rows}


def row_count(conn: Connection, table: str) -> int:
    return conn.execute(queries.COPY_COUNT[table]).fetchone()[0]


def bump_versions(source: Connection, target: Connection) -> None:
    """Every owner's usage version past both ends' own, so no ETag of either survives the copy."""
    for (owner_id,) in target.execute(queries.OWNER_IDS).fetchall():
        versions = [conn.execute(queries.OWNER_VERSION, {"owner_id": owner_id}).fetchone()[0]
                    for conn in (source, target)]
        target.execute(queries.SET_OWNER_VERSION, {"owner_id": owner_id, "version": max(versions) + 1})
