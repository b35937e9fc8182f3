"""The crash tests' writer: stores batches through the server's own store path until it
stops for good at a chosen point of its work, inside a batch, where it is killed.

Before each batch it appends "begin N" to its log, after the commit "commit N"
(unbuffered writes, so the log survives SIGKILL).
"""
import itertools
import os
import signal

from usage_server import queries
from usage_server.storage import connect, write_transaction
from usage_server.ingest import NewEvent, store_events

CONFIG_ID = "cfg_a"
STEPS = 100  # SQLite VM steps between two counts of the writer's progress


def batch(trial: int, number: int, size: int) -> list[NewEvent]:
    return [
        NewEvent(event_id=f"t{trial}-b{number}-e{i}", ts_us=1_772_323_200_000_000 + (trial * 7919 + number * 104_729 + i * 3_571) * 1_000_000,
                 config_id=CONFIG_ID, prompt_tokens=100 + i, completion_tokens=i % 37, total_tokens=100 + i + i % 37,
                 cost_micros=None if i % 3 else 1_000 + i, execution_us=None, billing_source="user" if i % 5 == 0 else "platform")
        for i in range(size)
    ]


class Stop:
    """Counts the writer's progress; at the `stop_at`-th count it sends `report()` through
    the pipe end `stopped` and waits to be killed."""

    def __init__(self, stop_at: int, stopped, report):
        self.counts, self.stop_at, self.stopped, self.report = itertools.count(1), stop_at, stopped, report
        self.number = 0  # the batch being stored

    def count(self) -> int:
        if next(self.counts) == self.stop_at:
            self.stopped.send(self.report(self.number))
            while True:
                signal.pause()
        return 0


def write_batches(conn, log_path: str, trial: int, size: int, stop: Stop, start_counting) -> None:
    """Store batch after batch; `start_counting()` is called once the lookups before them are done."""
    owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": "acme"}).fetchone()[0]
    configs = {CONFIG_ID: conn.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": CONFIG_ID}).fetchone()}
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    start_counting()
    while True:
        events = batch(trial, stop.number, size)
        os.write(log, f"begin {stop.number}\n".encode())
        with write_transaction(conn):
            store_events(conn, owner_id, events, configs)
        os.write(log, f"commit {stop.number}\n".encode())
        stop.number += 1


def main(database: str, log_path: str, trial: int, size: int, stop_at: int, stopped) -> None:
    """SQLite: stop at the `stop_at`-th count of STEPS VM steps, sending the batch's number.

    Counts happen only inside the statements that store a batch, so the stop is always
    after its "begin" and before its commit.
    """
    conn = connect({"DATABASE": database, "BUSY_TIMEOUT_MS": 5000, "SYNCHRONOUS": "FULL"})
    conn.execute("PRAGMA cache_size = 8")  # pages spill to the WAL mid-batch: the kill leaves uncommitted frames
    stop = Stop(stop_at, stopped, lambda number: number)
    write_batches(conn, log_path, trial, size, stop, lambda: conn.set_progress_handler(stop.count, STEPS))


def main_statements(database: str, log_path: str, trial: int, size: int, stop_at: int, stopped) -> None:
    """A server engine (PostgreSQL): stop after the `stop_at`-th statement that stores a
    batch, with its transaction open on the server, sending (the batch's number, the pid
    of the server process that runs the transaction).

    Once the batches begin, only store_events runs statements through `execute` and
    `executemany` (the engine begins and commits the transaction on the raw connection),
    so the stop is always after a batch's "begin" and before its commit.
    """
    conn = connect({"DATABASE": database, "BUSY_TIMEOUT_MS": 5000})
    server_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    stop = Stop(stop_at, stopped, lambda number: (number, server_pid))

    def counted(run):
        def run_and_count(*args):
            result = run(*args)
            stop.count()
            return result
        return run_and_count

    def start_counting():
        conn.execute, conn.executemany = counted(conn.execute), counted(conn.executemany)

    write_batches(conn, log_path, trial, size, stop, start_counting)
