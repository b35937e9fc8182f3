"""The fault matrix on PostgreSQL: every way the database server can fail, and what the API
answers. Each is a 503 with Retry-After, never a 500, stores nothing of the failed request,
and the server answers again once the fault is gone. (SQLite's faults of a file are in
test_faults.py and test_errors.py.)

Where a fault needs a request to be caught mid-way, the request is made to wait on a lock
another connection holds, and the test acts once pg_stat_activity shows it waiting: no
timing decides the outcome.
"""
import threading
import time
from urllib.parse import quote

import psycopg
import pytest
import requests

import postgres_cluster
from conftest import bearer, create_config, post_events
from gunicorn_server import gunicorn
from support import prepare_database
from test_faults import USAGE, events, loaded, reads, unavailable  # noqa: F401 (loaded: a fixture)
from usage_server import create_app
from usage_server.storage import postgresql

BUSY = "the database is busy, retry shortly"
READ_ONLY = "the database is read-only; nothing was stored"
TIME_LIMIT = "the query ran past the server's time limit"
UNAVAILABLE = "the database is busy or unavailable, retry shortly"
ROLLUPS = ("rollup_week", "rollup_day", "rollup_hour", "rollup_quarter")
WAIT_BOUND_SECONDS = 60  # only a failure bound: what the tests wait for happens long before
NEVER_MS = 600_000  # a limit that no part of a test reaches


def named(url: str, application_name: str) -> str:
    """The URL with an application_name, by which the server's own connections are found."""
    return f"{url}&application_name={quote(application_name)}"


@pytest.fixture
def database(postgres, request):
    """A new schema; the app's connections carry the test's name."""
    return named(postgres.new_schema(), request.node.name[:60])


@pytest.fixture
def admin(postgres):
    with psycopg.connect(postgres.superuser_url, autocommit=True) as conn:
        yield conn


def app_for(database: str, **config):
    return create_app({"TESTING": True, "DATABASE": database, "BUSY_TIMEOUT_MS": 200, **config})


def stored_events(database: str) -> int:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT COUNT(*) FROM usage_event").fetchone()[0]


def backends(admin, database: str, waiting: bool = False) -> list[int]:
    """The server's connections to `database` (found by its application_name)."""
    name = psycopg.conninfo.conninfo_to_dict(database)["application_name"]
    rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                         + (" AND wait_event_type = 'Lock'" if waiting else ""), (name,)).fetchall()
    return [pid for pid, in rows]


def wait_until_blocked(admin, database: str) -> list[int]:
    """The server's connections that wait on a lock, once there is one."""
    deadline = time.monotonic() + WAIT_BOUND_SECONDS
    while not (blocked := backends(admin, database, waiting=True)):
        assert time.monotonic() < deadline, "the request never reached the lock"
        time.sleep(0.01)
    return blocked


class InFlight(threading.Thread):
    """A request made on another thread, answered while the test changes the database."""

    def __init__(self, client, method, url, **kwargs):
        super().__init__(daemon=True)
        self.call, self.response = (lambda: client.open(url, method=method, **kwargs)), None

    def run(self):
        self.response = self.call()

    def answer(self):
        self.join(WAIT_BOUND_SECONDS)
        assert not self.is_alive(), "the request was never answered"
        return self.response


class Holder:
    """Another connection holding a lock in an open transaction until released."""

    def __init__(self, database: str, statement: str, params=()):
        self.conn = psycopg.connect(database)
        self.conn.execute(statement, params)

    def release(self):
        try:
            self.conn.rollback()
        except psycopg.OperationalError:  # the server went away, and the lock with it
            pass
        self.conn.close()


@pytest.fixture
def hold(database):
    holders = []

    def take(statement: str, params=(), url: str = database) -> Holder:
        holders.append(Holder(url, statement, params))
        return holders[-1]

    yield take
    for holder in holders:
        holder.release()


def lock_rollups(hold, **where):
    """Every read of usage waits behind this until it is released (or cut off)."""
    return hold(f"LOCK TABLE {', '.join(ROLLUPS)} IN ACCESS EXCLUSIVE MODE", **where)


# --- the query time limit: statement_timeout --------------------------------------------------


def test_a_query_past_the_time_limit_is_a_503_and_the_connection_is_used_again(database, client, loaded, hold):
    """A read waiting on a lock that is never released outlasts any limit: statement_timeout
    cuts it off, and the same pooled connection then answers without a deadline left over."""
    before = reads(client, loaded)
    limited = app_for(database, QUERY_TIME_LIMIT_MS=300).test_client()
    holder = lock_rollups(hold)
    unavailable(limited.get(USAGE, headers=bearer(loaded)), TIME_LIMIT)
    assert limited.get("/health").status_code == 200
    holder.release()
    assert reads(limited, loaded) == before
    assert reads(client, loaded) == before


@pytest.mark.slow
def test_the_time_limit_answers_before_gunicorns_worker_timeout(database, loaded, hold, tmp_path):
    """Without the limit this request would wait for ever; gunicorn would kill its worker."""
    log = tmp_path / "gunicorn.log"
    with gunicorn(database, log, workers=1, timeout=5, QUERY_TIME_LIMIT_MS=500) as base:
        holder = lock_rollups(hold)
        response = requests.get(base + USAGE, headers=bearer(loaded), timeout=WAIT_BOUND_SECONDS)
        assert (response.status_code, response.json()) == (503, {"error": TIME_LIMIT, "code": "service_unavailable"})
        assert response.headers["Retry-After"] == "1"
        holder.release()
        assert requests.get(base + USAGE, headers=bearer(loaded), timeout=WAIT_BOUND_SECONDS).status_code == 200
    assert "WORKER TIMEOUT" not in log.read_text()


# --- the write lock held by another writer: lock_timeout ------------------------------------------


def test_a_write_behind_another_writer_is_a_503_and_stores_nothing(app, client, loaded, hold):
    before = reads(client, loaded)
    holder = hold("SELECT pg_advisory_xact_lock(%s)", (postgresql.WRITE_LOCK,))
    started = time.monotonic()
    unavailable(client.post("/v1/model-usage/events", json={"events": events("x", 5)}, headers=bearer(loaded)), BUSY)
    assert time.monotonic() - started >= app.config["BUSY_TIMEOUT_MS"] / 1000  # it waited its turn first
    body = {"id": "cfg_b", "modelId": "gpt-4o", "provider": "OpenAI"}
    unavailable(client.post("/v1/model-configs", json=body, headers=bearer(loaded)), BUSY)
    assert reads(client, loaded) == before  # readers never wait for the write lock
    assert client.get("/health").status_code == 200
    holder.release()
    assert post_events(client, loaded, events("x", 5)) == {"accepted": 5, "duplicates": 0, "conflicts": 0}
    assert client.post("/v1/model-configs", json=body, headers=bearer(loaded)).status_code == 201


# --- a read-only database (a hot standby, or default_transaction_read_only) ----------------------------


def close_pools(*apps) -> None:
    """Close the pools of apps whose database goes away, so none keeps reconnecting."""
    for app in apps:
        postgresql.pool_for(app.config).close()


@pytest.fixture
def own_database(postgres, request):
    """A database of the test's own, for settings that apply to a whole database."""
    url = named(postgres.create_database("usage_faults"), request.node.name[:60])
    yield url
    postgres.drop_database(url)


def test_a_read_only_database_starts_serves_reads_and_refuses_writes(postgres, own_database, admin):
    key = prepare_database(own_database)["acme"]
    writable_app, read_only_app = app_for(own_database), None
    writable = writable_app.test_client()
    create_config(writable, key, "cfg_a")
    post_events(writable, key, events("e", 20))
    before = reads(writable, key)
    name = psycopg.conninfo.conninfo_to_dict(own_database)["dbname"]
    admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        read_only_app = app_for(named(own_database, "read-only"))  # new connections: read-only
        read_only = read_only_app.test_client()
        assert reads(read_only, key) == before
        assert read_only.get("/health").status_code == 200
        batch = {"events": events("x", 3)}
        unavailable(read_only.post("/v1/model-usage/events", json=batch, headers=bearer(key)), READ_ONLY)
        body = {"id": "cfg_b", "modelId": "gpt-4o", "provider": "OpenAI"}
        unavailable(read_only.post("/v1/model-configs", json=body, headers=bearer(key)), READ_ONLY)
        assert stored_events(own_database) == 20
    finally:
        close_pools(*filter(None, (writable_app, read_only_app)))


# --- connections terminated -------------------------------------------------------------------------


def test_terminated_idle_connections_are_replaced(database, client, loaded, admin):
    before = reads(client, loaded)
    pids = backends(admin, database)
    assert pids  # the pool keeps connections between requests
    for pid in pids:
        admin.execute("SELECT pg_terminate_backend(%s, %s)", (pid, WAIT_BOUND_SECONDS * 1000))
    assert not set(pids) & set(backends(admin, database))
    statuses = [client.get(USAGE, headers=bearer(loaded)).status_code for _ in range(2)]
    assert statuses in ([200, 200], [503, 200])  # a broken connection costs one 503 at most
    assert reads(client, loaded) == before
    assert post_events(client, loaded, events("x", 5)) == {"accepted": 5, "duplicates": 0, "conflicts": 0}


def test_a_connection_terminated_mid_write_is_a_503_and_stores_nothing(database, loaded, hold, admin):
    waiting = app_for(database, BUSY_TIMEOUT_MS=NEVER_MS).test_client()  # waits for the lock until cut off
    before = reads(waiting, loaded)
    holder = hold("SELECT pg_advisory_xact_lock(%s)", (postgresql.WRITE_LOCK,))
    batch = {"events": events("x", 5)}
    request = InFlight(waiting, "POST", "/v1/model-usage/events", json=batch, headers=bearer(loaded))
    request.start()
    for pid in wait_until_blocked(admin, database):
        admin.execute("SELECT pg_terminate_backend(%s, %s)", (pid, WAIT_BOUND_SECONDS * 1000))
    unavailable(request.answer(), UNAVAILABLE)
    holder.release()
    assert stored_events(database) == 20
    assert reads(waiting, loaded) == before
    assert post_events(waiting, loaded, batch["events"]) == {"accepted": 5, "duplicates": 0, "conflicts": 0}


# --- the database server restarted ----------------------------------------------------------------------


@pytest.fixture
def own_cluster(postgres):
    """A cluster of the test's own, to stop and start (the session's is shared)."""
    if postgres.folder is None:
        pytest.skip("USAGE_SERVER_TEST_POSTGRES names a server these tests may not restart")
    cluster = postgres_cluster.Cluster()
    yield cluster
    cluster.stop()


def pg_ctl(cluster, action: str) -> None:
    command = [str(cluster.binaries / "pg_ctl"), "-D", str(cluster.data), "-w", "-t", "120"]
    if action == "start":
        command += ["-l", str(cluster.folder / "server.log")]
    cluster.run(*command, *(["-m", "fast"] if action == "stop" else []), action)


@pytest.mark.slow
def test_a_server_restart_mid_request_is_a_503_and_the_server_answers_after(own_cluster, hold):
    url = named(own_cluster.create_database(), "restart")
    key = prepare_database(url)["acme"]
    app = app_for(url, BUSY_TIMEOUT_MS=NEVER_MS)
    client = app.test_client()
    create_config(client, key, "cfg_a")
    post_events(client, key, events("e", 20))
    before = reads(client, key)
    quick = app_for(named(url, "while-down"), BUSY_TIMEOUT_MS=1000)  # its own pool, which gives up after 1 s
    try:
        with psycopg.connect(own_cluster.superuser_url, autocommit=True) as admin:
            hold("SELECT pg_advisory_xact_lock(%s)", (postgresql.WRITE_LOCK,), url=url)
            lock_rollups(hold, url=url)
            write = InFlight(client, "POST", "/v1/model-usage/events", json={"events": events("x", 5)},
                             headers=bearer(key))
            read = InFlight(app.test_client(), "GET", USAGE, headers=bearer(key))
            write.start()
            read.start()
            deadline = time.monotonic() + WAIT_BOUND_SECONDS
            while len(backends(admin, url, waiting=True)) < 2:
                assert time.monotonic() < deadline, "the requests never reached their locks"
                time.sleep(0.01)
        pg_ctl(own_cluster, "stop")
        unavailable(write.answer(), UNAVAILABLE)
        unavailable(read.answer(), UNAVAILABLE)
        unavailable(quick.test_client().get(USAGE, headers=bearer(key)), UNAVAILABLE)
        pg_ctl(own_cluster, "start")
        statuses = [client.get(USAGE, headers=bearer(key)).status_code for _ in range(2)]
        assert statuses in ([200, 200], [503, 200])
        assert reads(client, key) == before  # the write cut off by the restart stored nothing
        assert post_events(client, key, events("x", 5)) == {"accepted": 5, "duplicates": 0, "conflicts": 0}
    finally:
        close_pools(app, quick)
