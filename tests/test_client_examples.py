"""docs/writing-usage.md, run as written against a real gunicorn: its code and its printed answers."""
import contextlib
import io
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from gunicorn_server import gunicorn
from support import prepare_database
from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

PAGE = Path(__file__).resolve().parent.parent / "docs" / "writing-usage.md"


def page_code() -> str:
    """Every ```python block of the page, in order, as one script."""
    return "\n".join(re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), re.S | re.M))


def printed_on_the_page(code: str) -> list[str]:
    """The comment that follows each print: on its own line, or on the next one."""
    lines = code.splitlines()
    expected = []
    for number, line in enumerate(lines):
        if not line.lstrip().startswith("print("):
            continue
        _, hash_mark, comment = line.partition("  # ")
        if not hash_mark:
            comment = lines[number + 1].strip().removeprefix("# ")
        expected.append(comment)
    return expected


def new_keys(database, owner):
    """A write-only key, as the page recommends, and a read key to check what it stored."""
    conn = connect(create_app({"DATABASE": str(database)}).config)
    with write_transaction(conn):
        keys = SimpleNamespace(write=create_key(conn, owner, ["write"])[1], read=create_key(conn, owner, ["read"])[1])
    conn.close()
    return keys


def usage_counts(base, key) -> dict:
    body = requests.get(f"{base}/v1/model-configs/usage", headers={"Authorization": f"Bearer {key}"}, timeout=120).json()
    return {item["id"]: item["usageCount"] for item in body["data"]}


@pytest.fixture(scope="module")
def server(engine, new_database, tmp_path_factory):
    """A gunicorn on a database of the module's engine; each test writes as owners of its own."""
    folder, database = tmp_path_factory.mktemp("examples"), new_database(engine)
    prepare_database(database, owners=())
    with gunicorn(database, folder / "gunicorn.log", workers=1) as base:
        yield SimpleNamespace(base=base, database=database, folder=folder)


def test_the_page_has_examples_and_says_what_they_print():
    code = page_code()
    assert "import requests" in code and "import urllib.request" in code and "def send_batch" in code
    assert len(printed_on_the_page(code)) == 7


def test_the_page_runs_as_written_and_prints_what_it_says(server):
    keys = new_keys(server.database, "support-app")
    script = server.folder / "writing_usage.py"
    script.write_text(page_code())
    env = {"PATH": "/usr/bin:/bin", "USAGE_SERVER_URL": server.base, "USAGE_SERVER_KEY": keys.write}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == printed_on_the_page(page_code())
    assert usage_counts(server.base, keys.read) == {"support-bot": 1 + 1 + 2500}


class LossyProxy(BaseHTTPRequestHandler):
    """Forwards POSTs upstream; per attempt it can lose the answer or play a busy server."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        step = self.server.steps.pop(0) if self.server.steps else "forward"
        self.server.seen.append(step)
        if step == "busy":
            payload = json.dumps({"error": "the database is busy, retry shortly", "code": "service_unavailable"}).encode()
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        answer = requests.post(self.server.upstream + self.path, data=body, timeout=120,
                               headers={"Authorization": self.headers["Authorization"], "Content-Type": "application/json"})
        if step == "lose":
            self.close_connection = True  # stored upstream; the client never hears of it
            return
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def lossy_proxy(upstream, steps):
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), LossyProxy)
    proxy.upstream, proxy.steps, proxy.seen = upstream, list(steps), []
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)


def test_send_batch_survives_a_lost_answer_and_a_busy_server_and_counts_once(server, monkeypatch):
    keys = new_keys(server.database, "batch-app")
    monkeypatch.setenv("USAGE_SERVER_URL", server.base)
    monkeypatch.setenv("USAGE_SERVER_KEY", keys.write)
    page = {"__name__": "writing_usage"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(page_code(), str(PAGE), "exec"), page)
    before = usage_counts(server.base, keys.read)["support-bot"]
    events = [{"id": f"retry-{n}", "timestamp": "2026-03-18T12:00:00-08:00", "modelConfigId": "support-bot",
               "promptTokens": 10, "completionTokens": n} for n in range(300)]
    with lossy_proxy(server.base, ["lose", "busy"]) as proxy:
        answer = page["send_batch"](events, base_url=f"http://127.0.0.1:{proxy.server_port}")
    assert proxy.seen == ["lose", "busy", "forward"]
    assert answer == {"accepted": 0, "duplicates": 300, "conflicts": 0}
    assert usage_counts(server.base, keys.read)["support-bot"] == before + 300
