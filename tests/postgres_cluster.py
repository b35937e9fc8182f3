"""A throwaway PostgreSQL cluster for the tests, from the installed server binaries.

The tests never need a running service: a cluster is made with initdb in a temporary
folder, listens on 127.0.0.1 at a free port, and is stopped at the end of the session.
Test databases use an ICU collation, a session time zone far from UTC and an ordinary
role that owns them (no superuser), so that collation, time-zone and privilege mistakes
show. USAGE_SERVER_TEST_POSTGRES, a superuser URL of a server to use instead, skips the
cluster entirely.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

SEARCHED = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin",
            "/usr/lib/postgresql/14/bin", "/usr/lib/postgresql/13/bin")
ROLE, PASSWORD = "usage", "usage-test"
SESSION_OPTIONS = "-c TimeZone=Pacific/Chatham"  # +12:45/+13:45: any answer that leans on it is wrong


def server_binaries() -> Path | None:
    for folder in [os.environ.get("USAGE_SERVER_PG_BIN", ""), *SEARCHED]:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def unavailable_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, in one line; None when they can."""
    if os.environ.get("USAGE_SERVER_TEST_POSTGRES"):
        return None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    if server_binaries() is None:
        return ("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql package, "
                "or set USAGE_SERVER_TEST_POSTGRES to a superuser URL")
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A PostgreSQL server for one test session; `superuser_url` administers it.

    `given`: the superuser URL of a server to use instead of starting one. `settings`:
    postgresql.conf lines over the test defaults (the benchmark turns durability back on).
    """

    def __init__(self, given: str | None = None, settings: dict | None = None):
        self.folder = None
        self.as_user = None
        given = given or os.environ.get("USAGE_SERVER_TEST_POSTGRES")
        if given:
            self.superuser_url = given
        else:
            self.superuser_url = self.start(settings or {})
        self.admin(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
                   f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' NOSUPERUSER NOCREATEDB NOCREATEROLE; END IF; END $$")
        self.counter = 0
        self.shared = None

    def run(self, *command, **kwargs):
        """Run a server binary; as root, as the `postgres` user (initdb refuses root)."""
        if os.geteuid() == 0:
            command = ("runuser", "-u", self.as_user, "--", *command)
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=300, **kwargs)

    def start(self, overrides: dict) -> str:
        binaries = server_binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="usage-pg-"))
        self.as_user = "postgres" if os.geteuid() == 0 else None
        if self.as_user:
            entry = pwd.getpwnam(self.as_user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        data, self.port = self.folder / "data", free_port()
        self.run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C.UTF-8")
        settings = {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                    "unix_socket_directories": f"'{self.folder}'", "fsync": "off",
                    "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "500",
                    "shared_buffers": "128MB", **overrides}
        with open(data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self.run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "server.log"), "-w",
                 "-t", "120", "start")
        self.binaries, self.data = binaries, data
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.folder is None:
            return
        try:
            self.run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.superuser_url, autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, prefix: str = "usage") -> str:
        """A new empty database owned by the ordinary role: its URL, as the server would be given it."""
        self.counter += 1
        name = f"{prefix}_{os.getpid()}_{self.counter}"
        self.admin(f'CREATE DATABASE "{name}" OWNER {ROLE} TEMPLATE template0 ENCODING UTF8 '
                   f"LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
        self.admin(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
        parts = urlsplit(self.superuser_url)
        netloc = f"{ROLE}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
        query = f"options={quote(SESSION_OPTIONS)}"
        return urlunsplit(("postgresql", netloc, f"/{name}", query, ""))

    def new_schema(self) -> str:
        """A URL to a new, empty schema of one shared test database: what a test gets (a new
        database per test would cost about a second each)."""
        import psycopg

        if self.shared is None:
            self.shared = self.create_database("usage_tests")
        self.counter += 1
        schema = f"t{os.getpid()}_{self.counter}"
        with psycopg.connect(self.shared, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        parts = urlsplit(self.shared)
        options = quote(f"{SESSION_OPTIONS} -c search_path={schema}")
        return urlunsplit(parts._replace(query=f"options={options}"))

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
