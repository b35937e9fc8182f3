"""A writer killed with SIGKILL mid-batch, again and again, on one database file.

The writer stops itself at a point of its work drawn for each trial, always inside a
batch, and is killed there: every kill lands mid-batch, whatever the machine's speed.

After every kill the file must pass PRAGMA integrity_check, every batch must be all
there or not there at all, committed batches must all be there, and the rollups must
equal the events summed again from scratch.
"""
import itertools
import multiprocessing
import multiprocessing.connection
import random
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

import crash_writer
from support import prepare_database
from usage_server import queries
from usage_server.storage import connect, write_transaction

TRIALS = 50
BATCH_SIZE = 1000
STOPS = range(1, 6_000)  # counts of crash_writer.STEPS VM steps: about two batches' worth
FORK = multiprocessing.get_context("fork")
# table -> (slot length, seconds from a slot start to the epoch's slot grid): weeks start
# on Mondays, and 1970-01-01 was a Thursday
ROLLUPS = {"rollup_week": (604_800, 3 * 86_400), "rollup_day": (86_400, 0), "rollup_hour": (3_600, 0),
           "rollup_quarter": (900, 0)}
REBUILT = """
SELECT owner_id, ts_us / 1000000 - (ts_us / 1000000 + :phase) % :grain AS slot, series_id, COUNT(*), SUM(1 - priced),
       SUM(CASE WHEN billing_source = 'platform' THEN total_tokens ELSE 0 END),
       SUM(CASE WHEN billing_source = 'user' THEN total_tokens ELSE 0 END),
       SUM(CASE WHEN billing_source = 'platform' THEN cost_micros ELSE 0 END),
       SUM(CASE WHEN billing_source = 'user' THEN cost_micros ELSE 0 END)
FROM usage_event
GROUP BY owner_id, slot, series_id
ORDER BY owner_id, slot, series_id
"""
FAST_TIMEZONES = "Asia/Kolkata,America/Los_Angeles"  # local days at +5:30, -8:00 and -7:00, hours at +5:30
LOCAL_OFFSETS = [(-28_800,), (-25_200,), (19_800,)]
LOCAL_ROLLUPS = {"rollup_local_day": ROLLUPS["rollup_day"], "rollup_local_week": ROLLUPS["rollup_week"],
                 "rollup_local_hour": ROLLUPS["rollup_hour"]}
# Local slots at an offset, as slots of the instants shifted by it (slots come out shifted too).
REBUILT_LOCAL = REBUILT.replace("ts_us / 1000000", "(ts_us / 1000000 + :offset)")


def read_log(path: Path) -> tuple[set[int], set[int]]:
    """(batches begun, batches committed) as the writer logged them."""
    lines = path.read_text().split() if path.exists() else []
    marks = list(zip(lines[::2], map(int, lines[1::2])))
    return {n for mark, n in marks if mark == "begin"}, {n for mark, n in marks if mark == "commit"}


def kill_mid_batch(database: Path, log: Path, trial: int, stop_at: int) -> int:
    """Fork a writer (no connection is open here to inherit), SIGKILL it where it stops;
    the number of the batch it was storing."""
    receiver, sender = FORK.Pipe(duplex=False)
    writer = FORK.Process(target=crash_writer.main, args=(str(database), str(log), trial, BATCH_SIZE, stop_at, sender))
    writer.start()
    sender.close()  # the writer's copy is the only one left: its death ends the pipe
    assert multiprocessing.connection.wait([receiver], timeout=600), "the writer neither stopped nor exited"
    try:
        number = receiver.recv()
    except EOFError:
        raise AssertionError(f"the writer exited with {writer.exitcode} before its stop") from None
    writer.kill()
    writer.join(120)
    assert writer.exitcode == -signal.SIGKILL
    return number


def check_database(database: Path, trial: int, begun: set[int], committed: set[int], earlier: int) -> int:
    """Checks the file after trial `trial`; returns how many of its batches are stored."""
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ids = [row[0] for row in conn.execute("SELECT event_id FROM usage_event WHERE event_id LIKE ?", (f"t{trial}-%",))]
        sizes = Counter(int(event_id.split("-")[1][1:]) for event_id in ids)
        assert set(sizes.values()) <= {BATCH_SIZE}, f"partial batch: {sizes}"
        assert committed <= set(sizes) <= begun
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'rollup%'").fetchall()
        # a new rollup table must be checked too
        assert sorted([*ROLLUPS, *LOCAL_ROLLUPS, "rollup_offset"]) == sorted(name for name, in tables)
        for table, (grain, phase) in ROLLUPS.items():
            stored = conn.execute(f"SELECT * FROM {table} ORDER BY owner_id, slot_start, series_id").fetchall()
            assert stored == conn.execute(REBUILT, {"grain": grain, "phase": phase}).fetchall(), table
        assert conn.execute("SELECT utc_offset FROM rollup_offset ORDER BY 1").fetchall() == LOCAL_OFFSETS
        for (table, (grain, phase)), (offset,) in itertools.product(LOCAL_ROLLUPS.items(), LOCAL_OFFSETS):
            stored = conn.execute(f"SELECT owner_id, slot_start + ?, series_id, requests, unpriced, platform_tokens, "
                                  f"user_tokens, platform_cost, user_cost FROM {table} WHERE utc_offset = ? "
                                  "ORDER BY owner_id, slot_start, series_id", (offset, offset)).fetchall()
            rebuilt = conn.execute(REBUILT_LOCAL, {"grain": grain, "phase": phase, "offset": offset}).fetchall()
            if table == "rollup_local_hour" and offset % 3_600 == 0:
                rebuilt = []  # whole-hour offsets: rollup_hour holds their local hours
            assert stored == rebuilt, (table, offset)
        batches = earlier + len(sizes)  # the usage ETag's version moves once per stored batch
        assert conn.execute("SELECT version FROM owner_version").fetchall() == ([(batches,)] if batches else [])
        return len(sizes)
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_mid_batch_leaves_whole_batches_and_a_sound_file(tmp_path):
    database, rng = tmp_path / "usage.sqlite", random.Random(20260318)
    config = {"DATABASE": str(database), "BUSY_TIMEOUT_MS": 5000, "SYNCHRONOUS": "FULL"}
    prepare_database(database, FAST_TIMEZONES=FAST_TIMEZONES)
    conn = connect(config)
    with write_transaction(conn):
        conn.execute(queries.INSERT_CONFIG, {"owner_id": 1, "id": crash_writer.CONFIG_ID, "display_name": "A",
                                             "model_id": "gpt-4o", "provider": "OpenAI", "model_name": "GPT-4o",
                                             "provider_key_id": None, "settings": "{}", "created_at": "2026-03-01T00:00:00Z"})
    conn.close()
    stored = 0
    for trial in range(TRIALS):
        log = tmp_path / f"trial{trial}.log"
        killed_in = kill_mid_batch(database, log, trial, rng.choice(STOPS))
        begun, committed = read_log(log)
        assert (begun, committed) == (set(range(killed_in + 1)), set(range(killed_in)))
        kept = check_database(database, trial, begun, committed, stored)
        assert kept == killed_in  # the committed batches, none of the one killed before its commit
        stored += kept
    print(f"\ncrash: {TRIALS} trials passed, each killed inside a batch, {stored} batches stored")
