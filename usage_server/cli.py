"""The `usage-server` command line: a Flask CLI group around the app factory."""
import time
from datetime import timezone

import click
from flask import current_app
from flask.cli import FlaskGroup, ScriptInfo, run_command, with_appcontext

from . import create_app, queries
from .auth import SCOPES, create_key, hash_key, now_iso
from .csvexport import fixed6
from .ingest import rebuild_rollups_in_steps
from .startup import prepare_database
from .storage import (Upgrade, backup, connect, database_exists, drop_schema, holds_data, redacted, restore,
                      restore_source, unavailable_reason, write_transaction)
from .timeranges import iso_instant


def prepare(create: bool = False) -> Upgrade:
    """The server's start-up work on the database, before a command uses it. Only commands
    that add data may create the database, and they say which file they used."""
    app = current_app._get_current_object()
    existed = database_exists(app.config["DATABASE"])
    upgrade = prepare_database(app, create=create, serve=False)
    if create:
        click.echo(f"{'Using' if existed else 'Created'} the database {redacted(app.config['DATABASE'])}.")
    return upgrade


def open_db(create: bool = False):
    """A connection for commands (no request, so no request deadline), the database prepared."""
    prepare(create)
    return connect(current_app.config)


def parse_scopes(value: str) -> list[str]:
    scopes = [scope.strip() for scope in value.split(",") if scope.strip()]
    bad = [scope for scope in scopes if scope not in SCOPES]
    if bad or not scopes:
        raise click.BadParameter(f"scopes are a comma-separated list of {', '.join(SCOPES)}")
    return scopes


@click.command("init-db")
@click.option("--drop", is_flag=True, help="Delete all data and start from an empty schema.")
@with_appcontext
def init_db_command(drop):
    """Create the schema if missing; never drops data without --drop."""
    conn = open_db(create=True)
    if drop:
        drop_schema(conn)
        prepare_database(current_app, create=True, serve=False)
    conn.close()
    click.echo(f"Initialised the database at {redacted(current_app.config['DATABASE'])}.")


@click.command("create-key")
@click.argument("owner")
@click.option("--scopes", default="read,write", show_default=True, help="Comma-separated: read, write.")
@click.option("--name", default="", help="A label to recognise the key by.")
@with_appcontext
def create_key_command(owner, scopes, name):
    """Create OWNER if needed and a key for it; prints the raw key last."""
    scopes = parse_scopes(scopes)
    conn = open_db(create=True)
    with write_transaction(conn):
        key_id, raw_key = create_key(conn, owner, scopes, name)
    conn.close()
    click.echo(f"Created key {key_id} for {owner} with scopes {','.join(scopes)}. It is shown only once:")
    click.echo(raw_key)


@click.command("list-keys")
@click.argument("owner", required=False)
@with_appcontext
def list_keys_command(owner):
    """List keys (never the raw key): id, owner, name, scopes, created, revoked."""
    conn = open_db()
    rows = conn.execute(queries.LIST_KEYS, {"owner": owner}).fetchall()
    conn.close()
    click.echo("id\towner\tname\tscopes\tcreated\trevoked")
    for row in rows:
        click.echo("\t".join([row["id"], row["owner"], row["name"], row["scopes"], row["created_at"], row["revoked_at"] or "-"]))


@click.command("revoke-key")
@click.argument("key")
@with_appcontext
def revoke_key_command(key):
    """Revoke a key, given its id or the raw key."""
    conn = open_db()
    params = {"id": key, "key_hash": hash_key(key), "revoked_at": now_iso()}
    with write_transaction(conn):
        revoked = conn.execute(queries.REVOKE_KEY, params).rowcount
        exists = conn.execute(queries.KEY_EXISTS, params).fetchone()
    conn.close()
    if not exists:
        raise click.ClickException("no such key")
    click.echo("Revoked." if revoked else "Already revoked.")


@click.command("import-prices")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def import_prices_command(path):
    """Add or update the operator's model prices, which win over the catalogue's, from a JSON
    file (format: docs/pricing.md); then `usage-server reprice` applies them to stored events."""
    from .pricing import import_catalogue, read_catalogue

    try:
        models = read_catalogue(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    conn = open_db()
    with write_transaction(conn):
        count = import_catalogue(conn, models)
    conn.close()
    click.echo(f"Imported {count} model prices.")


@click.command("rebuild-rollups")
@with_appcontext
def rebuild_rollups_command():
    """Recompute the pre-aggregated usage from the stored events, one owner's day at a time
    (short transactions: a running server keeps answering)."""
    from .retention import horizon_date, horizon_us

    conn = open_db()
    started = time.perf_counter()
    horizon = horizon_us(conn)
    steps = rebuild_rollups_in_steps(conn)
    conn.close()
    click.echo(f"Rebuilt the rollups in {time.perf_counter() - started:.1f} s ({steps} short transactions).")
    if horizon is not None:
        click.echo(f"Events before {horizon_date(horizon)} (UTC) were pruned: only the usage from then on was "
                   "recomputed from the events; the rollups before it were kept as they were.")


@click.command("seed")
@click.option("--events", default=20_000, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650))
@click.option("--seed", "seed_value", default=42, show_default=True, type=int)
@click.option("--owner", default="demo", show_default=True)
@click.option("--write-key", is_flag=True, help="Also print a read-write key for OWNER (before the read-only key).")
@with_appcontext
def seed_command(events, days, seed_value, owner, write_key):
    """Fill OWNER with synthetic usage over the last DAYS days; prints a read-only key last."""
    from seed.generator import seed_owner

    conn = open_db(create=True)
    started = time.perf_counter()
    stored = seed_owner(conn, owner, events=events, days=days, seed=seed_value)
    elapsed = time.perf_counter() - started
    with write_transaction(conn):
        writer = create_key(conn, owner, ["read", "write"], "seed read-write key")[1] if write_key else None
        _, raw_key = create_key(conn, owner, ["read"], "seed read key")
    conn.close()
    click.echo(f"Seeded {stored} events for {owner} over {days} days in {elapsed:.1f} s"
               f" into {redacted(current_app.config['DATABASE'])}.")
    if writer:
        click.echo("Read-write key:")
        click.echo(writer)
    click.echo("Read-only key:")
    click.echo(raw_key)


@click.command("migrate")
@with_appcontext
def migrate_command():
    """Upgrade the database's schema to this release's version (start-up also does)."""
    upgrade = prepare()
    database = redacted(current_app.config["DATABASE"])
    if upgrade.found == upgrade.reached:
        click.echo(f"The database {database} is at schema version {upgrade.reached}, this release's: nothing to do.")
    else:
        found = f"{upgrade.found} (none recorded)" if upgrade.found == 0 else upgrade.found
        click.echo(f"Upgraded the database {database} from schema version {found} to {upgrade.reached}.")


@click.command("copy-to")
@click.argument("target")
@with_appcontext
def copy_to_command(target):
    """Copy owners, keys, configs, prices and events into TARGET (a path or a PostgreSQL URL)
    and build its rollups; a re-run copies only what is new, a target with other data is refused."""
    from .copying import copy_to

    conn = open_db()
    try:
        copy_to(conn, current_app.config, target, click.echo)
    finally:
        conn.close()


def describe_events(config) -> str:
    """What a database holds, for backup and restore to print: events, owners, newest event."""
    conn = connect(config)
    try:
        row = conn.execute("SELECT COUNT(*), MAX(ts_us), COUNT(DISTINCT owner_id) FROM usage_event").fetchone()
    finally:
        conn.close()
    newest = "" if row[1] is None else f", the newest at {iso_instant(row[1])}"
    return f"{row[0]} events of {row[2]} owners{newest}"


@click.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False))
@with_appcontext
def backup_command(dest):
    """Copy the database, while the server keeps serving and writing, into the new file DEST
    and check the copy (PostgreSQL: prints the pg_dump command to use instead)."""
    prepare()
    check = backup(current_app.config, dest)
    click.echo(f"Backed up {redacted(current_app.config['DATABASE'])} to {dest} (integrity check: {check}): "
               f"{describe_events({**current_app.config, 'DATABASE': dest})}.")


@click.command("restore")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace a database that already holds data.")
@with_appcontext
def restore_command(source, force):
    """Replace the database's content with the backup SOURCE, checked first; a database that
    holds data is replaced only with --force (PostgreSQL: prints the pg_restore command)."""
    from .storage.migrations import checked_version

    config = current_app.config
    reader = connect(restore_source(config, source))
    try:
        checked_version(reader)  # a backup of a newer release is refused, as the server would
        if reader.execute("SELECT 1 FROM schema_version LIMIT 1").fetchone() is None:
            raise click.ClickException(f"{source} is not a usage-server database")
    except Exception as exc:
        if unavailable_reason(exc) is None:
            raise
        raise click.ClickException(f"{source} is not a usage-server database ({exc})") from None
    finally:
        reader.close()
    if holds_data(config) and not force:
        raise click.ClickException(f"the database {redacted(config['DATABASE'])} holds data: "
                                   "restore over it only with --force")
    restore(config, source)
    prepare()  # a backup of an earlier release is upgraded
    click.echo(f"Restored {source} into {redacted(config['DATABASE'])}: {describe_events(config)}.")


@click.command("prune")
@click.option("--keep-days", required=True, type=click.IntRange(1, None),
              help="Keep the raw events of the last N days (UTC), delete the older ones.")
@with_appcontext
def prune_command(keep_days):
    """Delete raw events older than N days in short batches; usage totals (the rollups) stay,
    and events older than the new horizon are refused from then on."""
    from datetime import datetime, timezone

    from .retention import prune

    conn = open_db()
    try:
        pruned = prune(conn, keep_days, datetime.now(timezone.utc).date())
    finally:
        conn.close()
    click.echo(f"Deleted {pruned.deleted} events before {pruned.horizon} (UTC); their usage stays in the totals, "
               f"and events before {pruned.horizon} are refused from now on.")
@click.command("reprice")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), help="Only events from this UTC day on.")
@click.option("--owner", help="Only this owner's events.")
@with_appcontext
def reprice_command(since, owner):
    """Price again every event sent without a cost, with the prices in effect now (overrides,
    then the installed catalogue); the rollups follow in the same transactions."""
    from .money import micros_to_usd
    from .repricing import reprice

    conn = open_db()
    since_us = None if since is None else int(since.replace(tzinfo=timezone.utc).timestamp()) * 1_000_000
    try:
        if owner is not None and conn.execute(queries.OWNER_ID_BY_NAME, {"name": owner}).fetchone() is None:
            raise click.ClickException(f"no owner named {owner!r}")
        result = reprice(conn, since_us, owner)
    finally:
        conn.close()
    delta = result.after - result.before
    click.echo(f"Repriced {result.changed:,} of {result.examined:,} events sent without a cost: "
               f"{'+' if delta >= 0 else '-'}${fixed6(abs(delta))} "
               f"(from ${fixed6(result.before)} to ${fixed6(result.after)}).")


COMMANDS = (init_db_command, create_key_command, list_keys_command, revoke_key_command,
            import_prices_command, rebuild_rollups_command, seed_command, migrate_command, copy_to_command,
            backup_command, restore_command, prune_command, reprice_command)


def init_app(app) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)


def command_line_app():
    """The app for commands: each prepares the database itself, and only some may create it."""
    return create_app(prepare_database=False)


@click.group(cls=FlaskGroup, create_app=command_line_app, add_default_commands=True, load_dotenv=False)
def main():
    """usage_server: LLM usage and cost analytics on one SQLite file."""


@main.command("run", params=run_command.params, help=run_command.help, short_help=run_command.short_help)
@click.pass_context
def run_server_command(ctx, **options):
    """Flask's development server, on a database prepared as at gunicorn's start-up."""
    prepare_database(ctx.ensure_object(ScriptInfo).load_app())
    ctx.invoke(run_command, **options)
