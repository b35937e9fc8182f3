"""The README's first quick-start command: scripts/demo seeds, prints curl lines that work, and serves."""
import json
import os
import shlex
import signal
import subprocess
import time

import pytest
import requests

from gunicorn_server import REPO, free_port, server_env

pytestmark = pytest.mark.slow


def run_curl(line: str) -> dict:
    result = subprocess.run(shlex.split(line.strip()), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_demo_prints_curl_lines_that_read_write_and_read_back(tmp_path):
    port = free_port()
    env = {**server_env(tmp_path / "demo.sqlite"), "PORT": str(port), "DEMO_EVENTS": "500"}
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        demo = subprocess.Popen([str(REPO / "scripts" / "demo")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # bounds a failure only: setting up the venv may install packages
        while True:
            assert demo.poll() is None, log.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        curls = [line for line in log.read_text().splitlines() if line.strip().startswith("curl ")]
        assert len(curls) == 3, log.read_text()
        read, post, read_back = curls
        assert "Seeded 500 events for demo" in log.read_text()
        before = run_curl(read)["summary"]["totalRequests"]
        assert before > 0
        assert run_curl(post) == {"accepted": 1, "duplicates": 0, "conflicts": 0}
        posted = json.loads(shlex.split(post)[shlex.split(post).index("-d") + 1])["events"][0]
        newest = run_curl(read_back)["recentUsage"][0]
        assert (newest["id"], newest["promptTokens"], newest["completionTokens"]) == (
            posted["id"], posted["promptTokens"], posted["completionTokens"])
        assert run_curl(read)["summary"]["totalRequests"] == before + 1
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(60)
