"""A writer killed with SIGKILL mid-batch, again and again, on one database.

The writer stops itself at a point of its work drawn for each trial, always inside a
batch, and is killed there: every kill lands mid-batch, whatever the machine's speed.

After every kill every batch must be all there or not there at all, committed batches
must all be there, and the rollups must equal the events summed again from scratch. On
SQLite the file must also pass PRAGMA integrity_check; on PostgreSQL the transaction the
writer left open must be rolled back by the server when its connection dies.
"""
import multiprocessing
import multiprocessing.connection
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

import crash_writer
from support import assert_rollups_equal_a_rebuild, open_database, prepare_database, rows
from usage_server import queries
from usage_server.storage import write_transaction

TRIALS = 50
BATCH_SIZE = 1000
FORK = multiprocessing.get_context("fork")
FAST_TIMEZONES = "Asia/Kolkata,America/Los_Angeles"  # local days at +5:30, -8:00 and -7:00, hours at +5:30
LOCAL_OFFSETS = [-28_800, -25_200, 19_800]
SERVER_GONE_S = 300  # only bounds a failure: a killed client's server process exits at once
SERVER_SESSION = """
SELECT state, backend_xid IS NOT NULL AS has_written
FROM pg_stat_activity
WHERE pid = :pid
"""


def read_log(path: Path) -> tuple[set[int], set[int]]:
    """(batches begun, batches committed) as the writer logged them."""
    lines = path.read_text().split() if path.exists() else []
    marks = list(zip(lines[::2], map(int, lines[1::2])))
    return {n for mark, n in marks if mark == "begin"}, {n for mark, n in marks if mark == "commit"}


def prepare(database: str) -> None:
    prepare_database(database, FAST_TIMEZONES=FAST_TIMEZONES)
    with open_database(database) as conn, write_transaction(conn):
        owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": "acme"}).fetchone()[0]
        conn.execute(queries.INSERT_CONFIG, {"owner_id": owner_id, "id": crash_writer.CONFIG_ID, "display_name": "A",
                                             "model_id": "gpt-4o", "provider": "OpenAI", "model_name": "GPT-4o",
                                             "provider_key_id": None, "settings": "{}", "created_at": "2026-03-01T00:00:00Z"})


def kill_mid_batch(writer_main, database: str, log: Path, trial: int, stop_at: int, before_kill=lambda stopped: None):
    """Fork a writer (no connection is open here to inherit), SIGKILL it where it stops;
    what it sent when it stopped, and what `before_kill` found then."""
    receiver, sender = FORK.Pipe(duplex=False)
    writer = FORK.Process(target=writer_main, args=(database, str(log), trial, BATCH_SIZE, stop_at, sender))
    writer.start()
    sender.close()  # the writer's copy is the only one left: its death ends the pipe
    assert multiprocessing.connection.wait([receiver], timeout=600), "the writer neither stopped nor exited"
    try:
        stopped = receiver.recv()
    except EOFError:
        raise AssertionError(f"the writer exited with {writer.exitcode} before its stop") from None
    try:
        found = before_kill(stopped)
    finally:
        writer.kill()
        writer.join(120)
    assert writer.exitcode == -signal.SIGKILL
    return stopped, found


def check_batches(conn, trial: int, begun: set[int], committed: set[int], earlier: int) -> int:
    """Checks the stored data after trial `trial`; returns how many of its batches are stored."""
    ids = [event_id for event_id, in rows(conn, "SELECT event_id FROM usage_event WHERE event_id LIKE :trial",
                                          {"trial": f"t{trial}-%"})]
    sizes = Counter(int(event_id.split("-")[1][1:]) for event_id in ids)
    assert set(sizes.values()) <= {BATCH_SIZE}, f"partial batch: {sizes}"
    assert committed <= set(sizes) <= begun
    assert assert_rollups_equal_a_rebuild(conn) == LOCAL_OFFSETS
    batches = earlier + len(sizes)  # the usage ETag's version moves once per stored batch
    assert rows(conn, "SELECT version FROM owner_version") == ([(batches,)] if batches else [])
    return len(sizes)


# The file and its write-ahead log are SQLite's own; PostgreSQL's counterpart is below.
@pytest.mark.sqlite_only
@pytest.mark.slow
def test_sigkill_mid_batch_leaves_whole_batches_and_a_sound_file(tmp_path):
    rng = random.Random(20260318)
    database = str(tmp_path / "usage.sqlite")
    prepare(database)
    stops = range(1, 6_000)  # counts of crash_writer.STEPS VM steps: about two batches' worth
    stored = 0
    for trial in range(TRIALS):
        log = tmp_path / f"trial{trial}.log"
        killed_in, _ = kill_mid_batch(crash_writer.main, database, log, trial, rng.choice(stops))
        begun, committed = read_log(log)
        assert (begun, committed) == (set(range(killed_in + 1)), set(range(killed_in)))
        with open_database(database) as conn:
            assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
            kept = check_batches(conn, trial, begun, committed, stored)
        assert kept == killed_in  # the committed batches, none of the one killed before its commit
        stored += kept
    print(f"\ncrash: {TRIALS} trials passed, each killed inside a batch, {stored} batches stored")


def server_session(database: str, pid: int):
    """(state, has written) of a PostgreSQL server process, None once it has exited."""
    with open_database(database) as conn:
        found = rows(conn, SERVER_SESSION, {"pid": pid})
    return found[0] if found else None


@pytest.mark.slow
def test_sigkill_mid_transaction_on_postgresql_is_rolled_back_by_the_server(postgres, tmp_path):
    """The writer stops after a statement of a batch, its transaction open on the server;
    killed, its connection dies and the server rolls the transaction back."""
    rng = random.Random(20260318)
    database = postgres.new_schema()
    prepare(database)
    stops = range(1, 29)  # counts of statements: a batch runs 14 (store_events with three local offsets)
    stored = written = 0
    for trial in range(TRIALS):
        log = tmp_path / f"trial{trial}.log"
        (killed_in, pid), session = kill_mid_batch(crash_writer.main_statements, database, log, trial,
                                                   rng.choice(stops), lambda stopped: server_session(database, stopped[1]))
        state, has_written = session
        assert state == "idle in transaction"  # killed inside the batch's transaction, between two statements
        written += has_written
        deadline = time.monotonic() + SERVER_GONE_S
        while server_session(database, pid) is not None:  # the server notices the closed connection and rolls back
            assert time.monotonic() < deadline, f"server process {pid} still there {SERVER_GONE_S} s after its client died"
            time.sleep(0.01)
        begun, committed = read_log(log)
        assert (begun, committed) == (set(range(killed_in + 1)), set(range(killed_in)))
        with open_database(database) as conn:
            kept = check_batches(conn, trial, begun, committed, stored)
        assert kept == killed_in  # the committed batches, none of the one killed before its commit
        stored += kept
    assert written > TRIALS // 2  # most kills left rows written and uncommitted (the draws are fixed by the seed)
    print(f"\ncrash (PostgreSQL): {TRIALS} trials passed, each killed inside a batch, {written} with rows written, "
          f"{stored} batches stored")
