"""Schema versions: `usage-server migrate`, refusal of a newer schema, steps that fail as a
whole, and workers starting at once on a new database, on both engines; and a database of
release 0.1.0 upgraded in place with every row and answer kept, on SQLite alone (the
release made SQLite files, and the fixture is one)."""
import configparser
import csv
import gzip
import io
import json
import multiprocessing
import re
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path

import pytest

from conftest import bearer, create_config, post_events
from gunicorn_server import free_port, gunicorn_command, server_env
from postgres_cluster import PASSWORD
from oracle import owner_rollups
from stored import EVENT_ROWS
from stored import owner_rollups as stored_owner_rollups
from stored import rows as stored_rows
import usage_server
from usage_server import api, create_app
from usage_server.queries import OWNER_ROLLUP_TABLES
from usage_server.storage import NewerSchemaError, connect, migrations, write_transaction
from usage_server.storage.connections import engine_of

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASE_0_1_0 = FIXTURES / "release-0.1.0.sqlite"  # made by fixtures/make_release_0_1_0.py
COMMITTED = RELEASE_0_1_0.as_uri() + "?immutable=1"  # read as it is: no journal, no lock files beside it
RECORDED = json.loads(gzip.decompress((FIXTURES / "release-0.1.0.json.gz").read_bytes()))
REPO = Path(__file__).resolve().parent.parent
SCHEMA_SQL = REPO / "schema.sql"
FORK = multiprocessing.get_context("fork")
LATEST = migrations.LATEST_VERSION
STEPS = [(version, path.stem) for version, path in migrations.steps("sqlite")]  # every version recorded
CREATED = {version: re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", path.read_text())
           for version, path in migrations.steps("sqlite")}
TABLES = sum(len(names) for names in CREATED.values())
LATER_TABLES = {name for version, names in CREATED.items() if version > 1 for name in names}
ENGINES = ("sqlite", "postgresql")


def named(database) -> str:
    """The database as messages name it: the test databases' password masked in a URL."""
    return str(database).replace(f":{PASSWORD}@", ":***@")


@contextmanager
def opened(database):
    """A connection to `database` as a command would make it (nothing prepared), closed after."""
    conn = connect(create_app({"DATABASE": str(database)}, prepare_database=False).config)
    try:
        yield conn
    finally:
        conn.close()


def query(database, statement) -> list[tuple]:
    with opened(database) as conn:
        return [tuple(row) for row in conn.execute(statement)]


def tables(database) -> list[str]:
    with opened(database) as conn:
        return sorted(engine_of(conn).table_names(conn))


def rows(database) -> dict[str, list[tuple]]:
    """Every row of every table, in a stable order."""
    return {table: sorted(query(database, f'SELECT * FROM "{table}"'), key=repr) for table in tables(database)}


def columns(database) -> dict[str, list[str]]:
    """Each table's columns in order: the part of a schema both engines show alike."""
    with opened(database) as conn:
        return {table: [column[0] for column in conn.execute(f'SELECT * FROM "{table}" WHERE 1 = 0').description]
                for table in tables(database)}


def structure(path) -> dict[str, dict]:
    """Each table's columns, indexes, foreign keys and rowid kind: what a schema defines (SQLite)."""
    conn = sqlite3.connect(path)
    tables = [row[0] for row in conn.execute("SELECT name FROM pragma_table_list WHERE schema = 'main' "
                                             "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    found = {
        table: {
            "columns": conn.execute(f"PRAGMA table_xinfo('{table}')").fetchall(),
            "indexes": sorted((name, unique, origin, partial, conn.execute(f"PRAGMA index_xinfo('{name}')").fetchall())
                              for _, name, unique, origin, partial in conn.execute(f"PRAGMA index_list('{table}')")),
            "foreign_keys": conn.execute(f"PRAGMA foreign_key_list('{table}')").fetchall(),
            "without_rowid": conn.execute("SELECT wr FROM pragma_table_list WHERE name = ?", (table,)).fetchone()[0],
        }
        for table in tables
    }
    conn.close()
    return found


def documented(tmp_path) -> dict[str, dict]:
    """The structure schema.sql describes."""
    path = tmp_path / "documented.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_SQL.read_text())
    conn.close()
    return structure(path)


def versions(database) -> list[tuple]:
    return query(database, "SELECT version, name FROM schema_version ORDER BY version")


def execute(database, *statements) -> None:
    with opened(database) as conn, write_transaction(conn):
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def release_copy(tmp_path) -> Path:
    """A copy of the database made by release 0.1.0 (the committed file is only ever read)."""
    path = tmp_path / "usage.sqlite"
    shutil.copyfile(RELEASE_0_1_0, path)
    return path


def start(path, **config):
    return create_app({"TESTING": True, "DATABASE": str(path), "FAST_TIMEZONES": RECORDED["fastTimezones"], **config})


def kept(old, new) -> bool:
    """Whether `new` says everything `old` said, unchanged: fields added since are allowed,
    none removed or changed, lists of the same length in the same order."""
    if isinstance(old, dict):
        return isinstance(new, dict) and list(old) == [key for key in new if key in old] and all(
            key in new and kept(value, new[key]) for key, value in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(old) == len(new) and all(map(kept, old, new))
    return type(old) is type(new) and old == new


def test_kept_allows_added_fields_only():
    old = {"a": 1, "b": [{"c": 2.5}]}
    assert kept(old, {"a": 1, "b": [{"c": 2.5, "d": 0}], "e": 3})
    assert not kept(old, {"a": 1, "b": [{"c": 2.4}]})
    assert not kept(old, {"a": 1})
    assert not kept(old, {"b": [{"c": 2.5}], "a": 1})  # the order of fields is kept too
    assert not kept(old, {"a": 1.0, "b": [{"c": 2.5}]})
    assert not kept(old, {"a": 1, "b": [{"c": 2.5}, {}]})


def kept_csv(old: str, new: str) -> bool:
    """Whether CSV `new` has `old`'s lines, byte for byte, columns added since at their ends."""
    old_lines, new_lines = old.split("\r\n"), new.split("\r\n")
    return len(old_lines) == len(new_lines) and all(
        line == was or line.startswith(was + ",") for was, line in zip(old_lines, new_lines))


def kept_rows(before: dict, after: dict) -> dict:
    """`after`'s rows of the tables in `before`, cut to the columns they had (columns added since
    come last); the model table, whose rows from a release's default prices the catalogue
    replaced, is compared by tests of its own."""
    return {table: sorted((row[:len(before[table][0])] if before[table] else row for row in after[table]), key=repr)
            for table in before if table != "model"}


def replay(client) -> None:
    """Every answer release 0.1.0 gave, asked again: each must say the same (fields and CSV
    columns added by later releases aside)."""
    for asked in RECORDED["answers"]:
        headers = {**bearer(RECORDED["keys"][asked["owner"]]), "Accept": asked.get("accept", "application/json")}
        response = client.get(asked["path"], query_string=asked["query"], headers=headers)
        assert response.status_code == 200, (asked["path"], asked["query"], response.get_json())
        if asked.get("accept") == "text/csv":
            assert kept_csv(asked["body"], response.get_data(as_text=True)), (asked["path"], asked["query"])
        else:
            assert kept(asked["body"], response.get_json()), (asked["path"], asked["query"])


# --- a database made by release 0.1.0 -------------------------------------------------------------


def test_the_fixture_is_small_and_unversioned():
    assert RELEASE_0_1_0.stat().st_size < 1_000_000
    assert "schema_version" not in rows(COMMITTED)
    assert len(rows(COMMITTED)["usage_event"]) == 450


# Release 0.1.0 has every table; earlier states of it lacked later rollups, which the
# upgrade computes from the events (in the same transaction as the version it records).
@pytest.mark.parametrize("missing", [(), ("rollup_week", "rollup_local_week", "rollup_local_hour")])
def test_a_release_0_1_0_database_is_upgraded_in_place_keeping_every_row_and_answer(release_copy, monkeypatch, missing):
    before = rows(release_copy)
    execute(release_copy, *(f"DROP TABLE {table}" for table in missing))
    monkeypatch.setattr(api, "utc_now", lambda: datetime.fromisoformat(RECORDED["now"]))
    app = start(release_copy)
    after = rows(release_copy)
    assert versions(release_copy) == STEPS
    assert kept_rows(before, after) == {table: before[table] for table in before if table != "model"}
    assert set(after) - set(before) == {"schema_version", *LATER_TABLES}
    assert_owner_rollups_are_the_events(release_copy)
    replay(app.test_client())
    start(release_copy)  # started again: nothing changes
    assert rows(release_copy) == after


def assert_owner_rollups_are_the_events(database) -> None:
    """The owner rollups the upgrade filled equal the oracle's sums of the stored events."""
    expected = owner_rollups(stored_rows(str(database), EVENT_ROWS))
    assert all(expected.values())
    assert stored_owner_rollups(str(database)) == expected


def test_the_perf_step_fills_the_owner_rollups_of_a_database_with_usage(database, engine, client, make_key):
    """A database at the step before, holding usage, gets owner rollups summed from its series rollups."""
    key = make_key("acme")
    create_config(client, key, "cfg_a")
    create_config(client, key, "cfg_b", "house", "Acme")
    events = [{"id": f"e{n}", "timestamp": f"2026-03-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00Z",
               "modelConfigId": "cfg_a" if n % 3 else "cfg_b", "promptTokens": n, "completionTokens": 2 * n,
               **({"billingSource": "user"} if n % 4 == 0 else {})} for n in range(200)]
    post_events(client, key, events[:120])
    other = make_key("globex")  # a second owner
    create_config(client, other, "cfg_a")
    post_events(client, other, [dict(event, modelConfigId="cfg_a") for event in events[120:]])
    version = next(number for number, path in migrations.steps(engine) if path.stem.endswith("_perf"))
    execute(database, *(f"DROP TABLE {table}" for table in OWNER_ROLLUP_TABLES.values()),
            f"DELETE FROM schema_version WHERE version >= {version}")
    assert migrate(database).exit_code == 0
    assert versions(database) == STEPS
    assert_owner_rollups_are_the_events(database)


def test_a_release_0_1_0_key_still_writes_after_the_upgrade(release_copy):
    client = start(release_copy).test_client()
    key = bearer(RECORDED["keys"]["acme"])
    event = {"id": "after-upgrade", "timestamp": "2026-03-18T12:00:00Z", "modelConfigId": "cfg_a",
             "promptTokens": 10, "completionTokens": 5}
    response = client.post("/v1/model-usage/events", json={"events": [event]}, headers=key)
    assert response.get_json() == {"accepted": 1, "duplicates": 0, "conflicts": 0}
    assert len(rows(release_copy)["usage_event"]) == 451


def test_the_upgraded_schema_is_the_schema_of_a_new_database_and_of_schema_sql(release_copy, tmp_path):
    start(release_copy)
    start(tmp_path / "new.sqlite")
    assert structure(release_copy) == structure(tmp_path / "new.sqlite") == documented(tmp_path)
    assert len(documented(tmp_path)) == TABLES


def test_both_engines_make_the_same_tables_and_columns(new_database):
    made = {engine: new_database(engine) for engine in ENGINES}
    for database in made.values():
        start(database)
    sqlite, postgresql = ({table: sorted(names) for table, names in columns(made[engine]).items()} for engine in ENGINES)
    assert len(sqlite) == len(postgresql) == TABLES  # compared as sets: owner_id leads each table on PostgreSQL
    assert postgresql.pop("api_key") == sorted(sqlite.pop("api_key") + ["rowid"])  # SQLite's rowid, spelt out
    assert postgresql == sqlite


def test_the_migrations_ship_in_the_package():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    patterns = config["options.package_data"]["usage_server"].split()
    package = Path(usage_server.__file__).parent
    shipped = [path for path in migrations.FOLDER.rglob("*")
               if any(fnmatch(path.relative_to(package).as_posix(), pattern) for pattern in patterns)]
    assert sorted(shipped) == sorted(path for engine in ENGINES for _, path in migrations.steps(engine))


# --- usage-server migrate ------------------------------------------------------------------------


def migrate(database, *args):
    return create_app({"DATABASE": str(database)}, prepare_database=False).test_cli_runner().invoke(args=["migrate", *args])


def test_migrate_upgrades_a_release_0_1_0_database_then_has_nothing_to_do(release_copy):
    before = rows(release_copy)
    result = migrate(release_copy)
    assert result.exit_code == 0, result.output
    assert result.output == f"Upgraded the database {release_copy} from schema version 0 (none recorded) to {LATEST}.\n"
    upgraded = rows(release_copy)
    assert kept_rows(before, upgraded) == {table: before[table] for table in before if table != "model"}
    again = migrate(release_copy)
    assert again.exit_code == 0, again.output
    assert again.output == f"The database {release_copy} is at schema version {LATEST}, this release's: nothing to do.\n"
    assert rows(release_copy) == upgraded


def test_migrate_brings_an_empty_database_to_this_version_then_has_nothing_to_do(database):
    connect(create_app({"DATABASE": database}, prepare_database=False).config, create=True).close()  # no table yet
    result = migrate(database)
    assert result.exit_code == 0, result.output
    assert result.output == f"Upgraded the database {named(database)} from schema version 0 (none recorded) to {LATEST}.\n"
    assert versions(database) == STEPS
    upgraded = rows(database)
    assert upgraded["model"] == []  # no operator prices yet: the catalogue prices every model it has
    again = migrate(database)
    assert again.exit_code == 0, again.output
    assert again.output == f"The database {named(database)} is at schema version {LATEST}, this release's: nothing to do.\n"
    assert rows(database) == upgraded


@pytest.fixture
def second_step(engine, tmp_path, monkeypatch):
    """This release's steps plus a 0002 written by the test; returns the file to write it in."""
    steps = tmp_path / "steps"
    shutil.copytree(migrations.FOLDER, steps)
    monkeypatch.setattr(migrations, "FOLDER", steps)
    monkeypatch.setattr(migrations, "LATEST_VERSION", LATEST + 1)
    return steps / engine / f"{LATEST + 1:04d}_second.sql"


def test_migrate_applies_the_steps_after_the_recorded_version(database, second_step):
    create_app({"DATABASE": database})
    second_step.write_text("ALTER TABLE owner ADD COLUMN note TEXT NOT NULL DEFAULT '';\n"
                           "CREATE INDEX owner_note ON owner (note);\n")
    result = migrate(database)
    assert result.output == f"Upgraded the database {named(database)} from schema version {LATEST} to {LATEST + 1}.\n"
    assert versions(database) == STEPS + [(LATEST + 1, f"{LATEST + 1:04d}_second")]
    assert columns(database)["owner"] == ["id", "name", "created_at", "note"]


def test_a_step_that_fails_changes_nothing(database, second_step):
    create_app({"DATABASE": database})
    before = columns(database)
    second_step.write_text("CREATE TABLE half (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
    result = migrate(database)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot use the database {named(database)}: ")
    assert "no_such_table" in result.output and result.output.count("\n") == 1, result.output
    assert columns(database) == before and versions(database) == STEPS


# --- a database from a newer release ------------------------------------------------------------


@pytest.fixture
def newer(database) -> tuple[str, str]:
    """A database whose recorded version (set by hand) is one this release does not know, and the refusal."""
    create_app({"DATABASE": database})
    execute(database, f"INSERT INTO schema_version VALUES ({LATEST + 1}, '{LATEST + 1:04d}_future', '2030-01-01T00:00:00Z')")
    return database, (f"the database {named(database)} has schema version {LATEST + 1}, newer than this release of "
                      f"usage-server knows (up to {LATEST}): it was upgraded by a newer release; run that release or a later one")


def test_a_newer_database_stops_the_app_factory_and_is_left_alone(newer):
    database, message = newer
    before = rows(database)
    with pytest.raises(NewerSchemaError) as raised:
        create_app({"DATABASE": database})
    assert raised.value.message == message
    assert rows(database) == before


@pytest.mark.parametrize("command", [["migrate"], ["list-keys"], ["create-key", "acme"], ["init-db"]])
def test_a_newer_database_is_refused_by_every_command(newer, command):
    database, message = newer
    before = rows(database)
    result = create_app({"DATABASE": database}, prepare_database=False).test_cli_runner().invoke(args=command)
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"
    assert rows(database) == before


def test_a_newer_database_stops_gunicorn(newer):
    database, message = newer
    result = subprocess.run(gunicorn_command(free_port(), workers=1), env=server_env(database), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert f"Error: {message} (USAGE_SERVER_DATABASE={named(database)})\n" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count(message) == 1 and PASSWORD not in result.stderr


# --- workers starting at once ------------------------------------------------------------------------


def start_in_process(database: str, barrier) -> None:
    barrier.wait(60)
    start(database, BUSY_TIMEOUT_MS=1)  # start-up waits for the one upgrading, whatever the setting


def start_at_once(database, count=6) -> None:
    """`count` processes start the app on `database` at the same moment; each must succeed."""
    barrier = FORK.Barrier(count)
    workers = [FORK.Process(target=start_in_process, args=(str(database), barrier)) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * count


def test_workers_starting_at_once_on_a_new_database_make_one_schema(database, new_database, engine):
    start_at_once(database)
    reference = new_database(engine)
    start(reference)  # one process alone
    assert versions(database) == STEPS
    assert columns(database) == columns(reference)
    after = rows(database)
    assert after["model"] == []
    assert after["rollup_offset"] == rows(reference)["rollup_offset"]


def test_workers_starting_at_once_upgrade_a_release_0_1_0_database_once(release_copy, tmp_path):
    before = rows(release_copy)
    start_at_once(release_copy)
    assert versions(release_copy) == STEPS
    assert structure(release_copy) == documented(tmp_path)
    after = rows(release_copy)
    assert kept_rows(before, after) == {table: before[table] for table in before if table != "model"}
