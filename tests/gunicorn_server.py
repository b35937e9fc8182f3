"""A real gunicorn serving wsgi:app on 127.0.0.1, a free port and a given database."""
import os
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


def gunicorn_command(port: int, workers: int = 4, timeout: int = 30) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--timeout", str(timeout),
            "--bind", f"127.0.0.1:{port}", "--chdir", str(REPO), "wsgi:app"]


def server_env(database, **config) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("USAGE_SERVER_")}
    env["USAGE_SERVER_DATABASE"] = str(database)
    env.update({f"USAGE_SERVER_{name}": str(value) for name, value in config.items()})
    return env


@contextmanager
def gunicorn(database, log_path, workers=4, timeout=30, **config):
    """Start gunicorn, wait for GET /health, yield its base URL; always stopped on exit."""
    port = free_port()
    with serving(gunicorn_command(port, workers, timeout), server_env(database, **config), port, log_path) as base:
        yield base


@contextmanager
def serving(command, env, port, log_path, cwd=REPO):
    """Run `command` in `cwd`, wait for GET /health on `port`, yield the base URL; always stopped on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{Path(log_path).read_text()}")
            try:
                if requests.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{Path(log_path).read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
