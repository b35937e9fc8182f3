"""Latency of GET /v1/model-usage through the WSGI app, beside the raw-event baseline.

Requests are WSGI calls into the real app (auth, validation, queries, JSON), so the
figures are the server's own time without a network. Cases are timed round-robin, one
call of each per round, so a noisy neighbour slows all of them alike.
"""
import json
import statistics
import time
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import urlencode

from werkzeug.test import EnvironBuilder

from usage_server import create_app, queries
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction
from usage_server.storage.connections import engine_for

from . import baseline, dataset

BUSIEST_CONFIG = "cfg_support_chat"  # the demo config with the largest share of traffic
TRIVIAL = "trivial: GET /v1/model-configs"


@dataclass(frozen=True)
class Case:
    name: str
    params: dict
    granularity: str


@dataclass(frozen=True)
class Timing:
    name: str
    median_ms: float
    p95_ms: float
    baseline_ms: float | None = None
    same_answer: bool | None = None


def cases(today: date) -> list[Case]:
    """The benchmarked questions, each also asked for one model configuration."""
    plain = [
        Case("last_7_days/hour", {"period": "last_7_days", "granularity": "hour"}, "hour"),
        Case("last_30_days/day", {"period": "last_30_days", "granularity": "day"}, "day"),
        Case("current_year/week", {"period": "current_year", "granularity": "week"}, "week"),
        Case("365 days/day", {"startDate": (today - timedelta(days=364)).isoformat(), "endDate": today.isoformat(),
                              "granularity": "day"}, "day"),
    ]
    return plain + [Case(f"{case.name} +config", {**case.params, "modelConfigId": BUSIEST_CONFIG}, case.granularity)
                    for case in plain]


def case_urls(today: date) -> dict[str, str]:
    """The trivial request first, then every case."""
    urls = {TRIVIAL: "/v1/model-configs"}
    urls.update({case.name: "/v1/model-usage?" + urlencode(case.params) for case in cases(today)})
    return urls


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class WsgiClient:
    """Calls the app the way a WSGI server does, with a prepared environ per URL."""

    def __init__(self, app, key: str):
        self.app, self.key, self.environs = app, key, {}

    def get(self, url: str) -> tuple[int, bytes]:
        if url not in self.environs:
            path, _, query = url.partition("?")
            builder = EnvironBuilder(path=path, query_string=query, headers={"Authorization": f"Bearer {self.key}"})
            self.environs[url] = builder.get_environ()
        status = []
        result = self.app(dict(self.environs[url]), lambda code, headers, exc_info=None: status.append(code))
        try:
            body = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        return int(status[0].split()[0]), body

    def timed(self, url: str) -> float:
        started = time.perf_counter()
        status, _ = self.get(url)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"{url} answered {status}")
        return elapsed


def new_key(database: str, owner: str, scopes=("read",)) -> str:
    conn = connect(create_app({"DATABASE": database}).config)
    with write_transaction(conn):
        _, raw = create_key(conn, owner, list(scopes), "benchmark")
    conn.close()
    return raw


def measure(targets: list[tuple[str, str]], today: date, rounds: int, baseline_rounds: int) -> list[list[Timing]]:
    """Per (database, owner): each case's median and p95, the baseline's median, same answer?

    Every database is timed in the same rounds, so sizes compare under the same load.
    """
    urls = case_urls(today)
    clients = [WsgiClient(create_app({"DATABASE": database}), new_key(database, owner)) for database, owner in targets]
    for client in clients:
        for url in urls.values():  # warm-up: imports, statement cache, pages
            client.timed(url)
    samples = [{name: [] for name in urls} for _ in clients]
    for _ in range(rounds):
        for client, sample in zip(clients, samples):
            for name, url in urls.items():
                sample[name].append(client.timed(url))
    return [against_baseline(database, owner, client, sample, today, baseline_rounds)
            for (database, owner), client, sample in zip(targets, clients, samples)]


def against_baseline(database: str, owner: str, client: WsgiClient, samples: dict, today: date,
                     baseline_rounds: int) -> list[Timing]:
    urls = case_urls(today)
    timings = [Timing(TRIVIAL, statistics.median(samples[TRIVIAL]) * 1000, percentile(samples[TRIVIAL], 0.95) * 1000)]
    conn = connect(dataset.app_config(database))
    conn.execute(baseline.COVERING_INDEX)
    engine = engine_for(database).NAME
    owner_id = conn.execute(queries.OWNER_ID_BY_NAME, {"name": owner}).fetchone()[0]
    for case in cases(today):
        status, body = client.get(urls[case.name])
        answer = json.loads(body)
        start, end = date.fromisoformat(answer["meta"]["startDate"]), date.fromisoformat(answer["meta"]["endDate"])
        config_id = case.params.get("modelConfigId")
        spent, expected = [], None
        for _ in range(baseline_rounds):
            started = time.perf_counter()
            expected = baseline.usage(conn, engine, owner_id, start, end, case.granularity, config_id)
            spent.append(time.perf_counter() - started)
        same = (expected == {part: answer[part] for part in expected}
                and list(expected["usageByModel"]) == list(answer["usageByModel"]))
        timings.append(Timing(case.name, statistics.median(samples[case.name]) * 1000,
                              percentile(samples[case.name], 0.95) * 1000, statistics.median(spent) * 1000, same))
    conn.close()
    return timings
