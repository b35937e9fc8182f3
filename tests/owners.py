"""Fixtures for a test module that shares one database: each test writes as owners of its own.

Import both into the module (`from owners import app, make_key`): they replace conftest's
per-test database, which is slower to create than a key, and every owner's data is
invisible to every other owner, so the tests cannot see each other.
"""
import pytest

from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction


@pytest.fixture(scope="module")
def app(engine, new_database):
    return create_app({"TESTING": True, "DATABASE": new_database(engine)})


@pytest.fixture
def make_key(app, request):
    """make_key(owner, scopes): a key of an owner private to the calling test."""

    def make(owner="acme", scopes=("read", "write")):
        conn = connect(app.config)
        with write_transaction(conn):
            _, raw = create_key(conn, f"{owner}@{request.node.nodeid}", list(scopes))
        conn.close()
        return raw

    return make
