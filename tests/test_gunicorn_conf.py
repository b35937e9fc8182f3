"""gunicorn.conf.py: plain `gunicorn wsgi:app` in the repository, configured by the environment."""
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import bearer
from gunicorn_server import REPO, free_port, server_env, serving
from support import prepare_database
from usage_server import __version__

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
SETTINGS_FROM_ELSEWHERE = ("WEB_CONCURRENCY", "PORT", "GUNICORN_CMD_ARGS")


def plain_env(database, tmp_path, **variables) -> dict:
    """This test's variables only, with gunicorn's per-user paths inside tmp_path."""
    env = {key: value for key, value in server_env(database).items() if key not in SETTINGS_FROM_ELSEWHERE}
    (tmp_path / "run").mkdir(exist_ok=True)
    env.update(HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path / "run"), **variables)
    return env


def settings(env, *flags) -> dict:
    """gunicorn's effective settings (`--print-config`) for this environment and these flags."""
    result = subprocess.run([GUNICORN, "--print-config", *flags, "wsgi:app"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return dict(re.fullmatch(r"(\w+) += (.*)", line).groups() for line in result.stdout.splitlines())


def wait_for(predicate, what: str):
    """Poll until `predicate()` holds; the bound only turns a hang into a failure."""
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def default_workers() -> int:
    return min(2 * len(os.sched_getaffinity(0)) + 1, 8)


def test_defaults(tmp_path):
    effective = settings(plain_env(tmp_path / "usage.sqlite", tmp_path))
    expected = ("['127.0.0.1:8000']", str(default_workers()), "30")
    assert (effective["bind"], effective["workers"], effective["timeout"]) == expected
    assert (effective["accesslog"], effective["control_socket_disable"]) == ("-", "True")


@pytest.mark.parametrize("variables, expected", [
    ({"WEB_CONCURRENCY": "3"}, {"workers": "3"}),
    ({"PORT": "9123"}, {"bind": "['127.0.0.1:9123']"}),
    ({"PORT": "9123", "USAGE_SERVER_BIND": "0.0.0.0:9124"}, {"bind": "['0.0.0.0:9124']"}),
    ({"USAGE_SERVER_QUERY_TIME_LIMIT_MS": "200"}, {"timeout": "30"}),
    ({"USAGE_SERVER_QUERY_TIME_LIMIT_MS": "45000"}, {"timeout": "90"}),
    ({"USAGE_SERVER_QUERY_TIME_LIMIT_MS": "45001"}, {"timeout": "91"}),
    ({"USAGE_SERVER_CONTROL_SOCKET": "/run/usage/a.ctl"},
     {"control_socket": "/run/usage/a.ctl", "control_socket_disable": "False"}),
])
def test_settings_from_the_environment(tmp_path, variables, expected):
    effective = settings(plain_env(tmp_path / "usage.sqlite", tmp_path, **variables))
    assert {name: effective[name] for name in expected} == expected


def test_flags_on_the_command_line_win(tmp_path):
    env = plain_env(tmp_path / "usage.sqlite", tmp_path, WEB_CONCURRENCY="3", PORT="9123",
                    USAGE_SERVER_QUERY_TIME_LIMIT_MS="45000")
    effective = settings(env, "--workers", "2", "--timeout", "7", "--bind", "127.0.0.1:9999")
    assert (effective["workers"], effective["timeout"], effective["bind"]) == ("2", "7", "['127.0.0.1:9999']")


def test_the_conf_files_default_query_limit_is_the_apps(app):
    """The worker timeout is derived from the same query limit the app enforces."""
    conf = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    assert conf["DEFAULT_QUERY_TIME_LIMIT_MS"] == app.config["QUERY_TIME_LIMIT_MS"]


def test_plain_gunicorn_serves_with_the_environments_workers_and_logs_access(tmp_path):
    database, log = tmp_path / "usage.sqlite", tmp_path / "gunicorn.log"
    key = prepare_database(database)["acme"]
    port = free_port()
    env = plain_env(database, tmp_path, PORT=str(port), WEB_CONCURRENCY="3")
    with serving([GUNICORN, "wsgi:app"], env, port, log) as base:
        response = requests.get(f"{base}/v1/model-usage?period=last_7_days", headers=bearer(key), timeout=30)
        assert response.status_code == 200
        wait_for(lambda: log.read_text().count("Booting worker with pid") == 3, "three workers booted")
    text = log.read_text()
    assert f"Listening at: http://127.0.0.1:{port} " in text
    assert '"GET /v1/model-usage?period=last_7_days HTTP/1.1" 200 ' in text  # the access log, on stdout
    assert key not in text


def test_servers_side_by_side_open_no_control_socket(tmp_path):
    """gunicorn's default control socket is one path per user: a second server would take it over."""
    database = tmp_path / "usage.sqlite"
    logs = tmp_path / "a.log", tmp_path / "b.log"
    ports = free_port(), free_port()
    envs = [plain_env(database, tmp_path, PORT=str(port), WEB_CONCURRENCY="1") for port in ports]
    with serving([GUNICORN, "wsgi:app"], envs[0], ports[0], logs[0]) as a, \
            serving([GUNICORN, "wsgi:app"], envs[1], ports[1], logs[1]) as b:
        assert requests.get(f"{a}/health", timeout=30).status_code == 200
        assert requests.get(f"{b}/health", timeout=30).status_code == 200
    for log in logs:
        assert "Control socket" not in log.read_text()
    assert list((tmp_path / "run").iterdir()) == []


def test_a_control_socket_asked_for_is_the_servers_own(tmp_path):
    database = tmp_path / "usage.sqlite"
    logs, sockets = (tmp_path / "a.log", tmp_path / "b.log"), (tmp_path / "a.ctl", tmp_path / "b.ctl")
    ports = free_port(), free_port()
    envs = [plain_env(database, tmp_path, PORT=str(port), WEB_CONCURRENCY="1", USAGE_SERVER_CONTROL_SOCKET=str(socket))
            for port, socket in zip(ports, sockets)]
    with serving([GUNICORN, "wsgi:app"], envs[0], ports[0], logs[0]), \
            serving([GUNICORN, "wsgi:app"], envs[1], ports[1], logs[1]):
        for log, socket in zip(logs, sockets):
            wait_for(lambda: f"Control socket listening at {socket}\n" in log.read_text(), f"listening at {socket}")
        assert sockets[0].is_socket() and sockets[1].is_socket()  # both at once: neither took the other's


def test_hup_starts_workers_on_new_code(tmp_path):
    """The start-up check runs in a child process, so the master never holds the application."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("wsgi.py", "gunicorn.conf.py", "schema.sql"):
        shutil.copy(REPO / name, checkout / name)
    shutil.copytree(REPO / "usage_server", checkout / "usage_server", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    port, log = free_port(), tmp_path / "gunicorn.log"
    env = plain_env(tmp_path / "usage.sqlite", tmp_path, PORT=str(port), WEB_CONCURRENCY="1")
    with serving([GUNICORN, "wsgi:app"], env, port, log, cwd=checkout) as base:
        def version():
            return requests.get(f"{base}/openapi.json", timeout=30).json()["info"]["version"]

        assert version() == __version__
        init = checkout / "usage_server" / "__init__.py"
        source = init.read_text()
        init.write_text(source.replace(f'__version__ = "{__version__}"', f'__version__ = "{__version__}+new"'))
        master = int(re.search(r"Listening at: \S+ \((\d+)\)", log.read_text()).group(1))
        os.kill(master, signal.SIGHUP)
        wait_for(lambda: version() == f"{__version__}+new", "a worker on the new code")


@pytest.mark.parametrize("variables, words", [
    ({"USAGE_SERVER_DATABASE": "{tmp}/missing/usage.sqlite"},
     ["directory {tmp}/missing does not exist (USAGE_SERVER_DATABASE={tmp}/missing/usage.sqlite)"]),
    ({"USAGE_SERVER_DEFAULT_TIMEZONE": "Mars/Olympus_Mons"}, ["USAGE_SERVER_DEFAULT_TIMEZONE", "'Mars/Olympus_Mons'"]),
])
def test_an_unusable_start_stops_gunicorn_with_one_line(tmp_path, variables, words):
    """Checked once, in the master, before any worker starts: one `Error:` line, no traceback."""
    variables = {name: value.format(tmp=tmp_path) for name, value in variables.items()}
    words = [word.format(tmp=tmp_path) for word in words]
    env = plain_env(tmp_path / "usage.sqlite", tmp_path, PORT=str(free_port()), WEB_CONCURRENCY="2", **variables)
    result = subprocess.run([GUNICORN, "wsgi:app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and all(word in errors[0] for word in words), result.stderr
    assert result.stderr.count(words[0]) == 1
    for absent in ("Traceback", "Booting worker", "Listening at"):
        assert absent not in result.stderr + result.stdout
    assert not (tmp_path / "missing").exists() and not (tmp_path / "usage.sqlite").exists()
