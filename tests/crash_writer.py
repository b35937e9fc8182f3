"""The crash test's writer: stores batches through the server's own store path until killed.

Before each batch it appends "begin N" to its log, after the commit "commit N"
(unbuffered writes, so the log survives SIGKILL).
"""
import os

from usage_server import queries
from usage_server.storage import connect, write_transaction
from usage_server.ingest import NewEvent, store_events

CONFIG_ID = "cfg_a"


def batch(trial: int, number: int, size: int) -> list[NewEvent]:
    return [
        NewEvent(event_id=f"t{trial}-b{number}-e{i}", ts_us=1_772_323_200_000_000 + (trial * 7919 + number * 104_729 + i * 3_571) * 1_000_000,
                 config_id=CONFIG_ID, prompt_tokens=100 + i, completion_tokens=i % 37, total_tokens=100 + i + i % 37,
                 cost_micros=None if i % 3 else 1_000 + i, execution_us=None, billing_source="user" if i % 5 == 0 else "platform")
        for i in range(size)
    ]


def main(database: str, log_path: str, trial: int, size: int) -> None:
    conn = connect({"DATABASE": database, "BUSY_TIMEOUT_MS": 5000, "SYNCHRONOUS": "FULL"})
    owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": "acme"}).fetchone()[0]
    configs = {CONFIG_ID: conn.execute(queries.CONFIG_BY_ID, {"owner_id": owner_id, "id": CONFIG_ID}).fetchone()}
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    number = 0
    while True:
        events = batch(trial, number, size)
        os.write(log, f"begin {number}\n".encode())
        with write_transaction(conn):
            store_events(conn, owner_id, events, configs)
        os.write(log, f"commit {number}\n".encode())
        number += 1
