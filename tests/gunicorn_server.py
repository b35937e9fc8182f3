"""A real gunicorn serving wsgi:app on 127.0.0.1, a free port and a given database."""
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn_command(port: int, workers: int = 4, timeout: int = 30, workdir=None) -> list[str]:
    """Run from the repository, or from a folder of its own (`workdir`, its files kept there)."""
    folder = ["--chdir", str(REPO)] if workdir is None else [
        "--chdir", str(workdir), "--pythonpath", str(REPO), "--worker-tmp-dir", str(workdir)]
    return [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--timeout", str(timeout),
            "--bind", f"127.0.0.1:{port}", *folder, "wsgi:app"]


def server_env(database, **config) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("USAGE_SERVER_")}
    env["USAGE_SERVER_DATABASE"] = str(database)
    env.update({f"USAGE_SERVER_{name}": str(value) for name, value in config.items()})
    return env


class Host:
    """A running gunicorn: its base URL, and kill() to end it as a crashed machine would."""

    def __init__(self, process: subprocess.Popen, base: str):
        self.process, self.base = process, base

    def kill(self) -> None:
        """SIGKILL to the master and its workers at once (their own process group)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def gunicorn(database, log_path, workers=4, timeout=30, **config):
    """Start gunicorn, wait for GET /health, yield its base URL; always stopped on exit."""
    with gunicorn_host(database, log_path, workers, timeout, **config) as host:
        yield host.base


@contextmanager
def gunicorn_host(database, log_path, workers=4, timeout=30, workdir=None, **config):
    """gunicorn() yielding a Host; with `workdir`, run from there (no files shared with another)."""
    port = free_port()
    command = gunicorn_command(port, workers, timeout, workdir)
    with started(command, server_env(database, **config), port, log_path, workdir or REPO) as host:
        yield host


@contextmanager
def serving(command, env, port, log_path, cwd=REPO):
    """Run `command` in `cwd`, wait for GET /health on `port`, yield the base URL; always stopped on exit."""
    with started(command, env, port, log_path, cwd) as host:
        yield host.base


@contextmanager
def started(command, env, port, log_path, cwd):
    """The server process in a session of its own (so kill() reaches its workers), once it answers."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # only bounds a failure: a busy machine boots slowly
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{Path(log_path).read_text()}")
            try:
                if requests.get(f"{base}/health", timeout=60).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{Path(log_path).read_text()}")
            time.sleep(0.2)
        yield Host(process, base)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the workers too
            process.wait()
