"""Which commands may create a database: those that add data (init-db, create-key, seed) and
the servers; every other command refuses a database that does not exist and creates nothing.

Those rules are about SQLite files. A PostgreSQL database is never created by the server:
a URL it cannot connect to is refused by every command in one line that names it, without
its password."""
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from flask import Flask

from usage_server import create_app
from gunicorn_server import free_port
from usage_server.cli import main
from usage_server.storage import connect, migrations

SCRIPT = Path(sys.executable).with_name("usage-server")


def refusal(path) -> str:
    return (f"Error: no database at {path}: set USAGE_SERVER_DATABASE to the database to use, "
            "or create one with `usage-server init-db`\n")


def stored(database, statement) -> list[tuple]:
    conn = connect(create_app({"DATABASE": str(database)}, prepare_database=False).config)
    found = [tuple(row) for row in conn.execute(statement).fetchall()]
    conn.close()
    return found


def version(database) -> int:
    return stored(database, "SELECT MAX(version) FROM schema_version")[0][0]


@pytest.fixture
def prices(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"models": [{"modelId": "m", "provider": "p", "promptPerMillion": 1, "completionPerMillion": 2}]}')
    return path


READING = [["list-keys"], ["list-keys", "acme"], ["revoke-key", "0123456789ab"], ["import-prices", "PRICES"],
           ["rebuild-rollups"], ["migrate"]]


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_commands_that_use_existing_data_refuse_a_missing_database(tmp_path, prices, command):
    path = tmp_path / "usage.sqlite"
    runner = create_app({"DATABASE": str(path)}, prepare_database=False).test_cli_runner()
    result = runner.invoke(args=[str(prices) if arg == "PRICES" else arg for arg in command])
    assert result.exit_code == 1
    assert result.output == refusal(path)
    assert sorted(os.listdir(tmp_path)) == ["prices.json"]


def test_the_installed_script_refuses_a_missing_database_and_creates_nothing(tmp_path):
    path = tmp_path / "usage.sqlite"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("USAGE_SERVER_", "FLASK_"))}
    for command in (["list-keys"], ["migrate"]):
        result = subprocess.run([str(SCRIPT), *command], env={**env, "USAGE_SERVER_DATABASE": str(path)},
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", refusal(path))
    assert os.listdir(tmp_path) == []


def test_without_the_variable_the_default_database_is_not_created_by_a_listing(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("USAGE_SERVER_"):
            monkeypatch.delenv(name)
    instance = tmp_path / "instance"
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(instance))
    result = CliRunner().invoke(main, ["list-keys"])
    assert result.exit_code == 1
    assert result.output == refusal(instance / "usage.sqlite")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", [["init-db"], ["create-key", "acme"], ["seed", "--events", "10", "--days", "2"]],
                         ids=" ".join)
def test_commands_that_add_data_create_the_database_and_say_which_file(tmp_path, command):
    path = tmp_path / "usage.sqlite"
    runner = create_app({"DATABASE": str(path)}, prepare_database=False).test_cli_runner()
    first = runner.invoke(args=command)
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"Created the database {path}.\n")
    assert version(path) == migrations.LATEST_VERSION
    again = runner.invoke(args=command)
    assert again.exit_code == 0, again.output
    assert again.output.startswith(f"Using the database {path}.\n")


def test_the_development_server_prepares_its_database_like_gunicorn(database, monkeypatch):
    monkeypatch.setenv("USAGE_SERVER_DATABASE", database)
    monkeypatch.setenv("USAGE_SERVER_FAST_TIMEZONES", "Asia/Kolkata")
    served = []
    monkeypatch.setattr("flask.cli.run_simple", lambda host, port, app, **options: served.append((host, port, app)))
    result = CliRunner().invoke(main, ["run", "--port", "5001"])
    assert result.exit_code == 0, result.output
    [(host, port, app)] = served
    assert (host, port, app.config["DATABASE"]) == ("127.0.0.1", 5001, database)
    assert version(database) == migrations.LATEST_VERSION
    assert stored(database, "SELECT utc_offset FROM rollup_offset") == [(19_800,)]  # as a server keeps them


PASSWORD = "s3cret-pw"


@pytest.fixture
def unreachable(postgres):
    """URLs of PostgreSQL databases that cannot be connected to: nothing listens on the port;
    the server runs but has no such database."""
    server = urlsplit(postgres.superuser_url)
    return {"no server": f"postgresql://usage:{PASSWORD}@127.0.0.1:{free_port()}/usage",
            "no database": f"postgresql://usage:{PASSWORD}@{server.hostname}:{server.port}/no_such_database"}


@pytest.mark.parametrize("command", [["list-keys"], ["migrate"], ["init-db"], ["create-key", "acme"],
                                     ["seed", "--events", "10"]], ids=" ".join)
def test_a_postgresql_url_that_cannot_be_connected_to_is_one_line_without_its_password(unreachable, command):
    for url in unreachable.values():
        runner = create_app({"DATABASE": url}, prepare_database=False).test_cli_runner()
        result = runner.invoke(args=command)
        assert result.exit_code == 1
        named = url.replace(f":{PASSWORD}@", ":***@")
        assert result.output.startswith(f"Error: cannot use the database {named}: connection failed: ")
        assert result.output.count("\n") == 1 and result.output.endswith("\n"), result.output
        assert PASSWORD not in result.output and "Traceback" not in result.output


def test_the_installed_script_names_an_unreachable_postgresql_database_in_one_line(unreachable):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("USAGE_SERVER_", "FLASK_"))}
    for reason, url in unreachable.items():
        result = subprocess.run([str(SCRIPT), "list-keys"], env={**env, "USAGE_SERVER_DATABASE": url},
                                capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout) == (1, "")
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: cannot use the database {url.replace(PASSWORD, '***')}: "), line
        assert ("Connection refused" if reason == "no server" else 'database "no_such_database" does not exist') in line
        assert PASSWORD not in result.stderr
