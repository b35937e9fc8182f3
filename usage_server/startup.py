"""Start-up work on the database, done by every server worker and every CLI command before
it uses it: the schema brought to this release's version and (for a server) the local rollups FAST_TIMEZONES asks for. Idempotent, so
all workers may run it at once; storage does the upgrade, the services here the data."""
import os
from datetime import datetime, timezone

from . import storage
from .ingest import rebuild_rollups, register_local_offsets
from .timeranges import zone_day_offsets

LOCAL_YEARS_AHEAD = 5  # FAST_TIMEZONES: offsets in use from 1970 to this many years from now


def wanted_local_offsets(config) -> set[int]:
    """The offsets of DEFAULT_TIMEZONE and FAST_TIMEZONES that local rollups serve."""
    until = datetime.now(timezone.utc).year + LOCAL_YEARS_AHEAD
    names = {config["DEFAULT_TIMEZONE"], *config.get("FAST_TIMEZONES", ())}
    return set().union(*(zone_day_offsets(name, until) for name in names))


def prepare_database(app, create: bool = True, serve: bool = True) -> storage.Upgrade:
    """Upgrade the schema (refusing one from a newer release); without `create`, a missing database is an error. A server (`serve`) also
    keeps the local rollups of its FAST_TIMEZONES; a command, whose environment may lack
    the setting, leaves them as the server made them."""
    database = app.config["DATABASE"]
    if not create and not storage.database_exists(database):
        raise storage.DatabaseSetupError(
            f"no database at {database}: set USAGE_SERVER_DATABASE to the database to use, "
            "or create one with `usage-server init-db`"
        )
    if create and os.path.dirname(os.path.abspath(database)) == app.instance_path:  # the default place
        os.makedirs(app.instance_path, exist_ok=True)
    with storage.start_up_connection(app.config, create) as conn:
        upgrade = storage.migrate(conn, rebuild_rollups)
        if serve:
            register_local_offsets(conn, wanted_local_offsets(app.config))
    return upgrade
