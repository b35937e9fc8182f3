"""The benchmark's data: 20 owners with skewed traffic over 365 days, in a fresh database.

Owner sizes follow Zipf's law (the k-th owner sends 1/k of the first's traffic), as
tenants of a hosted service do: the heaviest owner holds about 28% of all events.
Each owner is filled by seed.generator, so the traffic has its weekly and daily rhythm, and
stored by the server's own store_events, on either engine.
"""
import os
import time
from dataclasses import dataclass

from seed.generator import seed_owner
from usage_server import create_app
from usage_server.storage import connect

OWNERS = 20
DAYS = 365


@dataclass(frozen=True)
class Dataset:
    database: str  # an SQLite path or a PostgreSQL URL
    events: int
    seconds: float  # time spent seeding
    heaviest: str  # owner name
    heaviest_events: int
    end: int  # epoch second the generated traffic ends at (the time of seeding)


def owner_sizes(events: int, owners: int = OWNERS) -> list[int]:
    """Zipf shares of `events`, heaviest first, summing exactly to `events`."""
    weights = [1 / rank for rank in range(1, owners + 1)]
    sizes = [int(events * weight / sum(weights)) for weight in weights]
    sizes[0] += events - sum(sizes)
    return sizes


def remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def app_config(database: str) -> dict:
    """The server's own defaults (durable: SQLite's synchronous=FULL) on the benchmark's database."""
    return dict(create_app({"DATABASE": database}).config)


def build(database: str, events: int, days: int = DAYS) -> Dataset:
    """Seed `events` events into `database`, new and empty."""
    conn = connect(app_config(database))  # the app factory made the schema
    end = int(time.time())
    sizes = owner_sizes(events)
    started = time.perf_counter()
    for rank, size in enumerate(sizes, start=1):
        seed_owner(conn, f"owner{rank:02d}", events=size, days=days, seed=rank, end=end)
    seconds = time.perf_counter() - started
    conn.close()
    return Dataset(database, events, seconds, "owner01", sizes[0], end)
