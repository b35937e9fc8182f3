"""The crash test's writer: stores batches through the server's own store path until it
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


def main(database: str, log_path: str, trial: int, size: int, stop_at: int, stopped) -> None:
    """Write batches; at the `stop_at`-th count of STEPS VM steps, send the batch's number
    through the pipe end `stopped` and wait to be killed.

    Counts happen only inside the statements that store a batch, so the stop is always
    after its "begin" and before its commit.
    """
    conn = connect({"DATABASE": database, "BUSY_TIMEOUT_MS": 5000, "SYNCHRONOUS": "FULL"})
    conn.execute("PRAGMA cache_size = 8")  # pages spill to the WAL mid-batch: the kill leaves uncommitted frames
    owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": "acme"}).fetchone()[0]
    configs = {CONFIG_ID: conn.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": CONFIG_ID}).fetchone()}
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    counts = itertools.count(1)
    number = 0

    def progress():
        if next(counts) == stop_at:
            stopped.send(number)
            while True:
                signal.pause()
        return 0

    conn.set_progress_handler(progress, STEPS)
    while True:
        events = batch(trial, number, size)
        os.write(log, f"begin {number}\n".encode())
        with write_transaction(conn):
            store_events(conn, owner_id, events, configs)
        os.write(log, f"commit {number}\n".encode())
        number += 1
