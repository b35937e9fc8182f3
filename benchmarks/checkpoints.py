"""What serialised checkpoints cost: WRITERS processes each commit BATCHES batches of EVENTS events
through the server's write path, once with SQLite's automatic checkpoints (every connection
checkpoints when the WAL passes 1000 pages) and once as the server runs (automatic checkpoints
off, the committing writer checkpoints PASSIVE under the cross-process lock).

    .venv/bin/python -m benchmarks.checkpoints [--writers 4] [--batches 300] [--events 20]
"""
import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

FORK = multiprocessing.get_context("fork")


def writer(database, number, batches, events, automatic, results) -> None:
    from usage_server import create_app
    from usage_server.ingest import NewEvent, store_events
    from usage_server.storage import connect, write_transaction

    app = create_app({"DATABASE": database, "BUSY_TIMEOUT_MS": 600_000})
    conn = connect(app.config)
    if automatic:  # SQLite's default: every connection checkpoints by itself
        conn.execute("PRAGMA wal_autocheckpoint = 1000")
        conn.lock_path = None
    config = conn.execute("SELECT * FROM model_config WHERE id = 'cfg_bench'").fetchone()
    owner_id = config["owner_id"]
    timings = []
    for batch in range(batches):
        items = [NewEvent(f"w{number}-{batch}-{index}", 1_773_828_000_000_000 + batch * 1_000_000 + index,
                          "cfg_bench", index, batch, index + batch, None, None, "platform") for index in range(events)]
        started = time.perf_counter()
        with write_transaction(conn):
            store_events(conn, owner_id, items, {"cfg_bench": config})
        timings.append(time.perf_counter() - started)
    conn.close()
    results.put(timings)


def run(automatic: bool, writers: int, batches: int, events: int) -> dict:
    from usage_server import create_app
    from usage_server.auth import create_key, now_iso
    from usage_server.storage import connect, write_transaction

    folder = tempfile.mkdtemp(prefix="usage-checkpoints-")
    database = os.path.join(folder, "usage.sqlite")
    app = create_app({"DATABASE": database})
    conn = connect(app.config)
    with write_transaction(conn):
        create_key(conn, "bench", ["write"])
        owner_id = conn.execute("SELECT id FROM owner WHERE name = 'bench'").fetchone()[0]
        conn.execute("INSERT INTO model_config (owner_id, id, display_name, model_id, provider, model_name, created_at, "
                      "updated_at) VALUES (?, 'cfg_bench', 'bench', 'gpt-4o', 'OpenAI', 'GPT-4o', ?, ?)",
                      (owner_id, now_iso(), now_iso()))
    conn.close()
    results = FORK.Queue()
    started = time.perf_counter()
    processes = [FORK.Process(target=writer, args=(database, number, batches, events, automatic, results))
                 for number in range(writers)]
    for process in processes:
        process.start()
    timings = sorted(t for _ in processes for t in results.get())
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    wal = os.path.getsize(database + "-wal") if os.path.exists(database + "-wal") else 0
    return {"commits/s": len(timings) / elapsed, "median ms": statistics.median(timings) * 1000,
            "p99 ms": timings[int(len(timings) * 0.99)] * 1000, "max ms": timings[-1] * 1000, "WAL MB": wal / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for round_number in range(args.rounds):
        for name, automatic in (("automatic checkpoints", True), ("serialised checkpoints", False)):
            figures = run(automatic, args.writers, args.batches, args.events)
            print(f"round {round_number + 1} {name:24}", "  ".join(f"{key} {value:8.2f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
