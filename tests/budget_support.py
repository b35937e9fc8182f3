"""Helpers of the budget tests: a webhook receiver on 127.0.0.1, and the receiver's
verification code exactly as docs/budgets.md documents it."""
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "budgets.md"


def documented_verify():
    """The `verify` function of docs/budgets.md's Python block, executed as a reader would paste it."""
    code = re.search(r"### Verifying a delivery.*?```python\n(.*?)```", DOC.read_text(), re.S)[1]
    namespace = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the project's own documentation
    return namespace["verify"]


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers from a script:
    `answers` are (status, headers) used in turn, the last one repeated; status None never
    answers (the request waits until the receiver is stopped)."""

    def __init__(self, answers=((200, {}),)):
        self.answers, self.requests, self.lock = list(answers), [], threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    status, headers = receiver.answers[min(len(receiver.requests), len(receiver.answers)) - 1]
                    receiver.changed.notify_all()
                if status is None:
                    receiver.stopping.wait()
                    return
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path="/hook", host="127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 300) -> list[dict]:
        """The requests once there are `count` (the timeout only bounds a failure)."""
        with self.lock:
            assert self.changed.wait_for(lambda: len(self.requests) >= count, timeout), self.requests
            return list(self.requests)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
