"""gunicorn settings for `gunicorn wsgi:app`, which reads this file from its working directory.

Every value here comes from the environment; a flag on gunicorn's command line still wins.
Run as a script, the file is the start-up check that `on_starting` makes (see there).
"""
import math
import os
import shutil
import subprocess
import sys
import tempfile

DEFAULT_QUERY_TIME_LIMIT_MS = 10_000  # create_app's default; a test keeps the two equal
MAX_DEFAULT_WORKERS = 8  # SQLite takes one writer at a time; WEB_CONCURRENCY goes beyond


def usable_cores() -> int:
    """The cores this process may run on (fewer than the machine's in a container or a cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_timeout(query_time_limit_ms: float) -> int:
    """Seconds before gunicorn kills a silent worker: twice the query limit, at least 30.

    A request's SQL is cut off (503) at the limit; the work around it gets as long again,
    so a slow query is answered before its worker is killed.
    """
    return max(30, math.ceil(2 * query_time_limit_ms / 1000))


bind = os.environ.get("USAGE_SERVER_BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or min(2 * usable_cores() + 1, MAX_DEFAULT_WORKERS))
timeout = worker_timeout(float(os.environ.get("USAGE_SERVER_QUERY_TIME_LIMIT_MS") or DEFAULT_QUERY_TIME_LIMIT_MS))
accesslog = "-"  # one line per request on stdout; keys travel only in headers, which it leaves out

# gunicorn 25.1+ opens a control socket for `gunicornc` at one path per user, which a second
# server on the machine takes over (and removes when it stops): off unless given a path.
control_socket = os.environ.get("USAGE_SERVER_CONTROL_SOCKET", "")
control_socket_disable = not control_socket


def on_starting(server):
    """Open the database once, before any worker starts, and stop with one line if it is unusable.

    Without this every worker fails alone, each printing a long traceback. The check runs
    in a child process, so the master never imports the application and a HUP still
    starts workers on new code.
    """
    if subprocess.run([sys.executable, __file__], stdin=subprocess.DEVNULL).returncode != 0:
        sys.exit(1)
    start_metrics_directory()


def metrics_on() -> bool:
    return os.environ.get("USAGE_SERVER_METRICS", "off").strip().lower() in {"on", "true"}


def start_metrics_directory() -> None:
    """USAGE_SERVER_METRICS=on: the workers write their metrics to files in a new directory
    (prometheus_client's multiprocess mode), so a scrape of any worker sees every worker's.
    An operator's own PROMETHEUS_MULTIPROC_DIR is used as given (emptied by them)."""
    global metrics_directory
    if metrics_on() and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_directory = tempfile.mkdtemp(prefix="usage-server-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_directory


metrics_directory = None  # the directory on_starting made, removed on_exit


def child_exit(server, worker):
    """A worker's live gauges go with it (its counters stay counted)."""
    if metrics_on() and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if metrics_directory is not None:
        shutil.rmtree(metrics_directory, ignore_errors=True)


def check_start_up() -> None:
    """What every worker will do first (create_app), with any refusal as one `Error:` line."""
    from usage_server import create_app
    from usage_server.storage import DatabaseSetupError, redacted

    try:
        create_app()
    except DatabaseSetupError as exc:
        database = redacted(os.environ.get("USAGE_SERVER_DATABASE", ""))
        sys.exit(f"Error: {exc.format_message()}" + (f" (USAGE_SERVER_DATABASE={database})" if database else ""))
    except ValueError as exc:  # a misspelt time zone or SQLite setting
        sys.exit(f"Error: {exc}")


if __name__ == "__main__":
    check_start_up()
