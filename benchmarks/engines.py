"""Where the benchmark's databases live, per engine: SQLite files in the work folder, or
databases on a throwaway PostgreSQL cluster (or the server USAGE_SERVER_BENCH_POSTGRES names).

The cluster is the tests' (tests/postgres_cluster.py: initdb from the installed server
binaries, an ordinary role owning each database, an ICU collation, a session time zone far
from UTC), but durable like the SQLite files (synchronous=FULL): fsync, synchronous_commit
and full-page writes on, with 1 GB of shared buffers.
"""
import importlib.util
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from . import dataset

REPO = Path(__file__).resolve().parent.parent
NAMES = ("sqlite", "postgresql")
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
SERVER_VARIABLE = "USAGE_SERVER_BENCH_POSTGRES"  # a superuser URL: use that server, start none
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
           "shared_buffers": "1GB", "max_wal_size": "4GB"}


def postgres_cluster():
    """tests/postgres_cluster.py, the one copy of the cluster code, imported by its path."""
    spec = importlib.util.spec_from_file_location("postgres_cluster", REPO / "tests" / "postgres_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SQLite:
    name = "sqlite"
    durability = "synchronous=FULL"

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def new_database(self, events: int) -> str:
        path = str(self.workdir / f"usage-{events}.sqlite")
        dataset.remove_sqlite(path)
        return path

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL)"

    def settle(self, database: str) -> float | None:
        """Nothing to do after seeding: SQLite keeps no statistics it is not asked for."""
        return None

    def remove(self, database: str) -> None:
        dataset.remove_sqlite(database)

    def close(self) -> None:
        pass


class PostgreSQL:
    name = "postgresql"
    durability = "synchronous_commit=on"

    def __init__(self):
        module = postgres_cluster()
        given = os.environ.get(SERVER_VARIABLE)
        if not given and module.unavailable_reason():
            raise SystemExit(f"cannot benchmark PostgreSQL: {module.unavailable_reason()} "
                             f"(or set {SERVER_VARIABLE} to a superuser URL)")
        self.given = bool(given)
        self.cluster = module.Cluster(given=given, settings=DURABLE)

    def new_database(self, events: int) -> str:
        return self.cluster.create_database(f"bench_{events}")

    def describe(self) -> str:
        import psycopg

        with psycopg.connect(self.cluster.superuser_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        if self.given:
            return f"PostgreSQL {version} (the server {SERVER_VARIABLE} names)"
        settings = ", ".join(f"{name}={value}" for name, value in DURABLE.items())
        return f"PostgreSQL {version} (a cluster of its own on the same disk: {settings})"

    def settle(self, database: str) -> float:
        """VACUUM ANALYZE, as autovacuum would have done by then: planner statistics, and a
        visibility map for index-only scans (the baseline's covering index). Its seconds."""
        import psycopg

        superuser = urlsplit(self.cluster.superuser_url)._replace(path=urlsplit(database).path)
        started = time.perf_counter()
        with psycopg.connect(urlunsplit(superuser), autocommit=True) as conn:  # the catalogue too
            conn.execute("VACUUM (ANALYZE)")
        return time.perf_counter() - started

    def remove(self, database: str) -> None:
        self.cluster.drop_database(database)

    def close(self) -> None:
        self.cluster.stop()


def open_engine(name: str, workdir: Path):
    return SQLite(workdir) if name == "sqlite" else PostgreSQL()
