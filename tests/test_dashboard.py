"""The dashboard in a real headless Chromium (Debian's), against a live server on seeded data
of each engine.

Every number the page shows is compared with the API's own answer for the same query,
formatted by the page's documented rules. Screenshots go to test-artifacts/.
"""
import csv
import io
import re
import threading
from contextlib import contextmanager
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

from conftest import FROZEN_NOW
from oracle import expected_usage
from seed.generator import DEMO_CONFIGS, seed_owner
from usage_server import api, create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Waits end as soon as their condition holds: these bounds only say when to give up.
TIMEOUT_MS = 120_000
expect.set_options(timeout=TIMEOUT_MS)


# --- the server and the browser -------------------------------------------------------------


@contextmanager
def serving(database, events, days):
    """A threaded werkzeug server on a free port, on a seeded database, "now" pinned."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "utc_now", lambda: FROZEN_NOW)
        app = create_app({"DATABASE": str(database)})
        conn = connect(app.config)
        seed_owner(conn, "demo", events=events, days=days, seed=7, end=int(FROZEN_NOW.timestamp()))
        with write_transaction(conn):
            _, read_key = create_key(conn, "demo", ["read"])
            _, write_key = create_key(conn, "demo", ["write"])
        conn.close()
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", key=read_key, write_key=write_key)
        finally:
            server.shutdown()
            thread.join(60)
            server.server_close()


@pytest.fixture(scope="module")
def live(engine, new_database):
    """The module's server, on the module's engine: read-only for every test (a test that
    writes has its own)."""
    with serving(new_database(engine), events=8000, days=420) as server:
        yield server


@pytest.fixture
def own_live(database):
    """A server of the test's own, on a smaller seeded database it may write to."""
    with serving(database, events=600, days=60) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium (.ci/run does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, live):
    """open_page(viewport, zone) -> a page on the dashboard; fails the test on any script error."""
    contexts, problems = [], []

    def open_(viewport=LAPTOP, zone="UTC", allowed_statuses=(), server=live):
        context = browser.new_context(viewport=viewport, locale="en-US", timezone_id=zone, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

        def on_console(message):
            if message.type == "error" and not any(f"status of {s}" in message.text for s in allowed_statuses):
                problems.append(f"console: {message.text}")

        page.on("console", on_console)
        page.goto(server.url + "/")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []


def enter_key(page, key):
    page.fill("#key-input", key)
    page.click("#key-submit")


def wait_loaded(page, **params):
    """Until the page has rendered an answer whose query has these parameters; returns them all."""
    page.wait_for_function(
        """(want) => {
            const loaded = document.querySelector('#main').dataset.loaded;
            if (!loaded || document.body.dataset.state !== 'ready') return false;
            const got = new URLSearchParams(loaded.split('?')[1]);
            return Object.entries(want).every(([k, v]) => got.get(k) === v);
        }""",
        arg=params,
    )
    loaded = page.eval_on_selector("#main", "main => main.dataset.loaded")
    return loaded, {name: values[0] for name, values in parse_qs(urlsplit(loaded).query).items()}


def choose_range(page, start, end, **params):
    """Pick a custom range, then wait for its answer (with these other parameters too)."""
    page.select_option("#period", "custom")
    page.fill("#start-date", start)
    page.fill("#end-date", end)
    page.dispatch_event("#end-date", "change")
    return wait_loaded(page, startDate=start, endDate=end, **params)


def api_get(live, path, accept="application/json"):
    response = requests.get(live.url + path, headers={"Authorization": f"Bearer {live.key}", "Accept": accept},
                            timeout=120)
    assert response.status_code == 200, response.text
    return response


def shoot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


# --- the page's number formats (static/dashboard.js), written independently -----------------


def rounded(value: float, places: int) -> Decimal:
    """toFixed rounds the exact binary value, halves up."""
    return Decimal(value).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def usd(value: float, places: int) -> str:
    """Intl.NumberFormat (ICU) rounds the shortest decimal that reads back as the value
    (0.006305, not the binary 0.0063049999...), halves away from zero."""
    return f"${Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP):,.{places}f}"


def money(value: float) -> str:
    return usd(value, 2 if value == 0 or abs(value) >= 0.01 else 6)


def average(value: float) -> str:
    """Three significant digits, or cents when those keep more decimals (Intl's roundingPriority
    "morePrecision": the rounding at the finer magnitude wins)."""
    with localcontext() as context:
        context.prec, context.rounding = 3, ROUND_HALF_UP
        significant = +Decimal(repr(value))
    return usd(value, max(2, 2 - significant.adjusted()) if value else 2)


def count(value: int) -> str:
    return f"{value:,}"


def unpriced(model: dict) -> str:
    return f" {count(model['unpricedRequests'])} unpriced" if model["unpricedRequests"] else ""


def hit_rate(usage: dict) -> str:
    """Cached ÷ prompt tokens as a percentage with one decimal (toFixed), "–" without prompt tokens."""
    if not usage["promptTokens"]:
        return "–"
    return f"{rounded(usage['cachedPromptTokens'] / usage['promptTokens'] * 100, 1)}%"


def text(page, selector):
    return page.text_content(selector).strip()


def table(page, selector):
    return page.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.innerText.trim()))")


def assert_shows(page, body):
    """Cards, chart size, per-model table and time-series table all equal the API's answer."""
    summary = body["summary"]
    assert text(page, "#total-cost") == money(summary["totalCost"])
    assert text(page, "#total-tokens") == count(summary["totalTokens"])
    assert text(page, "#platform-cost") == money(summary["platformCost"])
    assert text(page, "#platform-tokens") == count(summary["platformTokens"])
    assert text(page, "#user-cost") == money(summary["userCost"])
    assert text(page, "#user-tokens") == count(summary["userTokens"])
    assert text(page, "#total-requests") == count(summary["totalRequests"])
    assert text(page, "#unpriced-requests") == count(body["meta"]["unpricedRequests"])
    assert text(page, "#cache-hit-rate") == hit_rate(summary)
    assert text(page, "#cached-tokens") == count(summary["cachedPromptTokens"])
    assert text(page, "#prompt-tokens") == count(summary["promptTokens"])
    if summary["totalRequests"]:
        assert text(page, "#avg-cost") == average(summary["totalCost"] / summary["totalRequests"])
    assert page.eval_on_selector("#chart", "c => Number(c.dataset.points)") == len(body["timeSeries"])
    assert legend(page) == ["whole range", money(summary["totalCost"]), count(summary["totalRequests"])]
    assert text(page, "#zone-name") == body["meta"]["timezone"]
    models = []
    for model in body["usageByModel"].values():
        share = model["totalCost"] / summary["totalCost"] if summary["totalCost"] > 0 else 0
        name = model["modelName"] if model["modelName"] == model["modelId"] else f"{model['modelName']}\n{model['modelId']}"
        models.append([name, model["provider"], count(model["requestCount"]),
                       count(model["totalTokens"]), hit_rate(model), average(model["avgCostPerRequest"]),
                       money(model["totalCost"]) + unpriced(model), f"{rounded(share * 100, 1)}%"])
    assert table(page, "#models-table") == models
    flagged = page.eval_on_selector_all("#models-table tbody tr.unpriced", "rows => rows.map(r => r.dataset.modelId)")
    assert sorted(flagged) == sorted(model_id for model_id, model in body["usageByModel"].items()
                                     if model["unpricedRequests"])
    assert_series_table(page, body["timeSeries"])


def legend(page):
    """The chart legend's values: bucket, cost, requests."""
    return page.eval_on_selector_all("#chart .u-legend .u-value", "cells => cells.map(c => c.textContent)")


def assert_series_table(page, series, rows_per_page=500):
    """The time series as a table, a page of rows at a time: the first page and the last."""
    if not page.eval_on_selector("#series-details", "d => d.open"):
        page.click("#series-details summary")
    last = (len(series) - 1) // rows_per_page
    for number in sorted({0, last}):
        for _ in range(number):
            page.click("#series-next")
        shown = series[number * rows_per_page:(number + 1) * rows_per_page]
        page.wait_for_function(
            """([n, first]) => {
                const rows = document.querySelector('#series-table').tBodies[0].rows;
                return rows.length === n && rows[0].cells[0].textContent === first;
            }""",
            arg=[len(shown), shown[0]["date"]],
        )
        assert table(page, "#series-table") == [
            [point["date"], count(point["requests"]), count(point["tokens"]), money(point["cost"])] for point in shown]
        if last:
            first = number * rows_per_page
            expect(page.locator("#series-rows")).to_have_text(
                f"rows {count(first + 1)}–{count(first + len(shown))} of {count(len(series))}")


# --- the tests ----------------------------------------------------------------------------


def test_numbers_equal_the_api_as_period_and_granularity_change(open_page, live):
    page = open_page()
    expect(page.locator("#welcome")).to_be_visible()
    enter_key(page, live.key)
    path, params = wait_loaded(page)
    assert params == {"period": "last_30_days", "granularity": "day", "timezone": "UTC"}
    body = api_get(live, path).json()
    assert_shows(page, body)
    # different averages never read alike, and a model's unpriced requests are flagged on its row
    averages = [row[5] for row in table(page, "#models-table")]
    assert len(set(averages)) == len({model["avgCostPerRequest"] for model in body["usageByModel"].values()}) > 10
    tone = body["usageByModel"]["ft:gpt-4o-mini:acme:tone"]
    assert tone["totalCost"] == 0 and tone["unpricedRequests"] == tone["requestCount"] > 0
    row = page.locator("#models-table tr[data-model-id='ft:gpt-4o-mini:acme:tone']")
    expect(row).to_have_class("unpriced")
    expect(row.locator(".badge.warn")).to_have_text(f"{count(tone['requestCount'])} unpriced")
    shoot(page, "laptop-last-30-days")

    page.select_option("#period", "last_7_days")
    page.select_option("#granularity", "hour")
    path, _ = wait_loaded(page, period="last_7_days", granularity="hour")
    body = api_get(live, path).json()
    assert len(body["timeSeries"]) == 7 * 24
    assert_shows(page, body)
    shoot(page, "laptop-last-7-days-hourly")

    page.select_option("#period", "current_year")
    page.select_option("#granularity", "week")
    path, _ = wait_loaded(page, period="current_year", granularity="week")
    assert_shows(page, api_get(live, path).json())

    page.select_option("#period", "last_month")
    page.select_option("#granularity", "month")
    path, _ = wait_loaded(page, period="last_month", granularity="month")
    assert_shows(page, api_get(live, path).json())


def test_zone_defaults_to_the_browsers_and_is_always_named(open_page, live):
    page = open_page(zone="Asia/Kathmandu")
    enter_key(page, live.key)
    path, params = wait_loaded(page, timezone="Asia/Kathmandu")
    assert page.input_value("#zone") == "Asia/Kathmandu"
    expect(page.locator("#zone-note")).to_contain_text("Asia/Kathmandu (now UTC+05:45)")
    page.select_option("#granularity", "hour")
    path, _ = wait_loaded(page, granularity="hour", timezone="Asia/Kathmandu")
    body = api_get(live, path).json()
    assert body["timeSeries"][0]["date"].endswith("+05:45")
    assert_shows(page, body)

    page.select_option("#zone", "America/Los_Angeles")
    path, _ = choose_range(page, "2026-03-07", "2026-03-09", timezone="America/Los_Angeles")
    body = api_get(live, path).json()
    assert len(body["timeSeries"]) == 71  # a spring-forward day has 23 hours
    assert_shows(page, body)
    expect(page.locator("#zone-name")).to_have_text("America/Los_Angeles")
    shoot(page, "laptop-los-angeles-dst")


def test_configurations_and_their_recent_requests(open_page, live):
    page = open_page(zone="Europe/Berlin")
    enter_key(page, live.key)
    wait_loaded(page)
    usage = api_get(live, "/v1/model-configs/usage").json()["data"]
    page.wait_for_function("n => document.querySelectorAll('#configs-table tbody tr').length === n", arg=len(usage))
    shown = page.eval_on_selector_all("#configs-table tbody tr", "rows => rows.map(r => r.dataset.configId)")
    expected = sorted(usage, key=lambda item: (-item["usageCount"], item["id"]))
    assert shown == [item["id"] for item in expected]
    berlin = ZoneInfo("Europe/Berlin")

    def local(iso):
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(berlin).strftime("%Y-%m-%d %H:%M:%S")

    assert [row[3:5] for row in table(page, "#configs-table")] == [
        [count(item["usageCount"]), local(item["lastUsedAt"])] for item in expected]

    config_id = expected[-1]["id"]
    open_recent(page, expected[0]["id"])
    open_recent(page, config_id)
    details = api_get(live, f"/v1/model-usage/{config_id}?limit=25").json()
    rows = table(page, "#recent-table")
    assert rows == [
        [local(event["timestamp"]), event["id"], count(event["promptTokens"]), count(event["completionTokens"]),
         count(event["totalTokens"]),
         money(event["estimatedCost"]) + ("" if event["priced"] else " unpriced"),
         "–" if event["executionTime"] is None else f"{rounded(event['executionTime'], 2)}",
         "your key" if event["billingSource"] == "user" else "platform"]
        for event in details["recentUsage"]]
    expect(page.locator("#recent-title")).to_contain_text("Europe/Berlin")

    page.select_option("#config-filter", config_id)
    path, _ = wait_loaded(page, modelConfigId=config_id)
    assert_shows(page, api_get(live, path).json())


def open_recent(page, config_id):
    """Ask for a configuration's recent requests: the panel is brought into view, its first rows whole."""
    row = page.locator(f"#configs-table tr[data-config-id='{config_id}']")
    row.locator("button").click()
    expect(row).to_have_class("selected")
    expect(page.locator("#recent-title")).to_be_in_viewport(ratio=1)
    expect(page.locator("#recent-table tbody td").first).to_be_in_viewport(ratio=1)


def test_models_sort_by_each_column(open_page, live):
    page = open_page()
    enter_key(page, live.key)
    path, _ = wait_loaded(page)
    models = list(api_get(live, path).json()["usageByModel"].values())

    def shown_ids():
        return page.eval_on_selector_all("#models-table tbody tr", "rows => rows.map(r => r.dataset.modelId)")

    assert shown_ids() == [m["modelId"] for m in models]  # the API's order: cost, descending
    by_id = {m["modelId"]: m for m in models}
    for key, first in [("requestCount", "descending"), ("totalTokens", "descending"), ("cacheHitRate", "descending"),
                       ("avgCostPerRequest", "descending"),
                       ("totalCost", "descending"), ("share", "descending"), ("provider", "ascending"),
                       ("modelName", "ascending")]:
        header = page.locator(f"#models-table th[data-key='{key}']")
        for direction in (first, "ascending" if first == "descending" else "descending"):
            header.locator("button").click()
            expect(header).to_have_attribute("aria-sort", direction)
            shown = shown_ids()
            assert sorted(shown) == sorted(by_id)
            field = "totalCost" if key == "share" else key
            values = [by_id[model_id][field] for model_id in shown] if key != "cacheHitRate" else [
                by_id[model_id]["cachedPromptTokens"] / by_id[model_id]["promptTokens"] for model_id in shown]
            if isinstance(values[0], str):
                values = [value.casefold() for value in values]
            assert values == sorted(values, reverse=direction == "descending")


def test_bad_key_is_explained_and_not_kept(open_page, live):
    page = open_page(allowed_statuses=(401,))
    enter_key(page, "usk_000000000000_not-a-real-key")
    expect(page.locator("#message")).to_have_text(
        "This key was not accepted (401 Unauthorized). Check that you pasted the whole key and that it has not been revoked.")
    expect(page.locator("#dashboard")).to_be_hidden()
    expect(page.locator("#welcome")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('usage_server.key')") is None
    shoot(page, "bad-key")


def test_key_stays_in_the_tab_and_out_of_addresses(open_page, live):
    page = open_page()
    seen = []
    page.on("request", lambda request: seen.append((request.url, request.headers.get("authorization"))))
    enter_key(page, live.key)
    wait_loaded(page)
    assert page.evaluate("sessionStorage.getItem('usage_server.key')") == live.key
    assert page.evaluate("localStorage.length") == 0
    assert live.key not in page.url and page.input_value("#key-input") == ""
    api_calls = [(url, auth) for url, auth in seen if "/v1/" in url]
    assert api_calls and all(live.key not in url and auth == f"Bearer {live.key}" for url, auth in api_calls)
    page.reload()
    wait_loaded(page)  # still signed in for this tab
    page.click("#key-forget")
    assert page.evaluate("sessionStorage.getItem('usage_server.key')") is None
    expect(page.locator("#welcome")).to_be_visible()


def test_empty_range_and_too_many_buckets_are_explained(open_page, live):
    page = open_page(allowed_statuses=(400,))
    enter_key(page, live.key)
    wait_loaded(page)
    path, _ = choose_range(page, "2020-01-01", "2020-01-31")
    expect(page.locator("#message")).to_have_text(
        "No usage from 2020-01-01 to 2020-01-31 (UTC). Try a longer period or another configuration.")
    expect(page.locator("#chart-empty")).to_be_visible()
    assert_shows(page, api_get(live, path).json())

    page.fill("#start-date", "2010-01-01")
    page.select_option("#granularity", "hour")
    error = requests.get(live.url + "/v1/model-usage?startDate=2010-01-01&endDate=2020-01-31&granularity=hour&timezone=UTC",
                         headers={"Authorization": f"Bearer {live.key}"}, timeout=30).json()
    suggestion = error["details"][0]["suggestion"]
    expect(page.locator("#message")).to_have_text(f"{error['error']} ({suggestion}).")
    expect(page.locator("#message")).to_have_class("message warn")


def test_server_error_is_explained(open_page, live):
    page = open_page(allowed_statuses=(503,))
    body = '{"error": "the database is busy, retry shortly", "code": "service_unavailable"}'
    page.route("**/v1/model-usage?*", lambda route: route.fulfill(
        status=503, body=body, content_type="application/json", headers={"Retry-After": "1"}))
    enter_key(page, live.key)
    expect(page.locator("#message")).to_have_text(
        "The server could not answer (HTTP 503: the database is busy, retry shortly). Try again in a moment.")
    expect(page.locator("#message")).to_have_class("message error")
    shoot(page, "server-error")


def test_csv_download_is_the_api_csv(open_page, live):
    page = open_page()
    enter_key(page, live.key)
    page.select_option("#granularity", "week")
    path, _ = wait_loaded(page, granularity="week")
    with page.expect_download() as info:
        page.click("#download-csv")
    download = info.value
    expected = api_get(live, path, accept="text/csv")
    assert download.suggested_filename == expected.headers["Content-Disposition"].split('"')[1]
    assert Path(download.path()).read_bytes() == expected.content
    assert next(csv.reader(io.StringIO(expected.text)))[0] == "date"


def conditional_usage(response):
    """An answer to a usage request that carried an ETag (Refresh, or the page's polling)."""
    return "/v1/model-usage?" in response.url and "if-none-match" in response.request.headers


def test_refresh_asks_with_the_etag_and_shows_new_usage(open_page, own_live):
    """Writes usage: on a database of its own, so the module's stays as seeded."""
    page = open_page(server=own_live)
    enter_key(page, own_live.key)
    path, _ = wait_loaded(page, period="last_30_days")
    before = api_get(own_live, path)
    with page.expect_response(conditional_usage) as unchanged:
        page.click("#refresh")
    assert unchanged.value.status == 304
    assert unchanged.value.request.headers["if-none-match"] == before.headers["ETag"]
    expect(page.locator("#status-note")).to_contain_text("unchanged")

    event = {"id": "dashboard-new-1", "timestamp": "2026-03-18T09:00:00Z", "modelConfigId": "cfg_summarizer",
             "promptTokens": 1200, "completionTokens": 300, "cost": 0.5}
    stored = requests.post(own_live.url + "/v1/model-usage/events", json={"events": [event]},
                           headers={"Authorization": f"Bearer {own_live.write_key}"}, timeout=120)
    assert stored.json()["accepted"] == 1
    after = api_get(own_live, path).json()
    assert after["summary"]["totalRequests"] == before.json()["summary"]["totalRequests"] + 1
    with page.expect_response(conditional_usage) as changed:  # the first one after the write
        page.click("#refresh")
    assert changed.value.status == 200
    expect(page.locator("#total-requests")).to_have_text(count(after["summary"]["totalRequests"]))
    assert_shows(page, after)


def test_cache_hit_rates_are_the_oracle_overall_and_per_model(open_page, own_live):
    """Events with cached prompt tokens on a day the seeded data leaves empty: the card and each
    model's row show cached ÷ prompt tokens as the independent oracle sums them."""
    events = []
    for number, (config_id, prompt, cached, written) in enumerate([
            ("cfg_summarizer", 4000, 3000, 500), ("cfg_summarizer", 1000, 0, 1000), ("cfg_summarizer", 2100, 2100, 0),
            ("cfg_support_chat", 900, 128, 0), ("cfg_support_chat", 1100, 0, 0), ("cfg_planner", 0, 0, 0)]):
        events.append({"id": f"cache-{number}", "timestamp": f"2025-12-02T{10 + number:02d}:00:00Z",
                       "modelConfigId": config_id, "promptTokens": prompt, "completionTokens": 100,
                       "cachedPromptTokens": cached, "cacheWriteTokens": written, "reasoningTokens": number * 10})
    stored = requests.post(own_live.url + "/v1/model-usage/events", json={"events": events},
                           headers={"Authorization": f"Bearer {own_live.write_key}"}, timeout=120)
    assert stored.json()["accepted"] == len(events)
    configs = {config.id: {"modelId": config.model_id, "provider": config.provider, "modelName": config.model_id}
               for config in DEMO_CONFIGS}
    expected = expected_usage(events, configs, {}, date(2025, 12, 2), date(2025, 12, 2))
    page = open_page(server=own_live)
    enter_key(page, own_live.key)
    wait_loaded(page)
    choose_range(page, "2025-12-02", "2025-12-02")
    assert text(page, "#cache-hit-rate") == hit_rate(expected["summary"]) == "57.5%"  # 5,228 of 9,100
    assert (text(page, "#cached-tokens"), text(page, "#prompt-tokens")) == ("5,228", "9,100")
    rows = {row[0].split("\n")[-1]: row[4] for row in table(page, "#models-table")}
    assert rows == {model_id: hit_rate(model) for model_id, model in expected["usageByModel"].items()}
    assert rows == {"claude-haiku-4-5": "71.8%", "gpt-4o-mini": "6.4%", "o4-mini": "–"}


OUTSIDE_THE_SCREEN = """() => {
    const width = document.documentElement.clientWidth;
    const outside = (node) => {
        const box = node.getBoundingClientRect();
        return box.width > 0 && (box.left < -0.5 || box.right > width + 0.5);
    };
    const clippedOnScreen = (node) => {  // inside a box that scrolls or clips, itself on the screen
        for (let box = node.parentElement; box; box = box.parentElement) {
            if (["auto", "scroll", "hidden"].includes(getComputedStyle(box).overflowX) && !outside(box)) return true;
        }
        return false;
    };
    return Array.from(document.body.querySelectorAll("*"), (node) => node)
        .filter((node) => outside(node) && !clippedOnScreen(node))
        .map((node) => `${node.tagName}#${node.id}.${node.className}`);
}"""


def test_phone_width_scrolls_tables_in_their_own_boxes(open_page, live):
    """At 390 px nothing sticks out of the screen except inside a scroll box, wide tables say
    that they scroll, and the zone's offset stays on one line."""
    page = open_page(viewport=PHONE, zone="America/Los_Angeles")
    enter_key(page, live.key)
    path, _ = wait_loaded(page, timezone="America/Los_Angeles")
    assert_shows(page, api_get(live, path).json())
    page.click("#series-details summary")  # folded again for the picture
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.evaluate(OUTSIDE_THE_SCREEN) == []
    chart_width = page.eval_on_selector("#chart canvas", "c => c.getBoundingClientRect().width")
    assert 0 < chart_width <= PHONE["width"]

    offset = page.locator("#zone-offset")
    expect(offset).to_have_text(re.compile(r"^\(now UTC[+-]\d\d:\d\d\)$"))
    assert offset.evaluate("span => span.getClientRects().length") == 1  # not broken across lines

    models = page.locator("#models-table").locator("xpath=..")
    expect(models).to_have_attribute("data-overflow", "right")
    expect(models.locator("xpath=preceding-sibling::p[1]")).to_have_text("scroll sideways for more →")
    expect(models.locator("xpath=preceding-sibling::p[1]")).to_be_visible()
    assert models.evaluate("box => getComputedStyle(box).maskImage") != "none"  # the hidden side fades out
    shoot(page, "phone")
    badge_shown = """box => {
        const badge = box.querySelector("tr.unpriced .badge.warn").getBoundingClientRect();
        const shown = box.getBoundingClientRect();
        return badge.left >= shown.left && badge.right <= shown.right;
    }"""
    assert models.evaluate(badge_shown) is False  # the cost column is off to the right...
    models.evaluate("box => box.scrollTo({ left: box.scrollWidth })")
    expect(models).to_have_attribute("data-overflow", "left")
    assert models.evaluate(badge_shown) is True  # ...and scrolled to

    usage = api_get(live, "/v1/model-configs/usage").json()["data"]
    open_recent(page, max(usage, key=lambda item: (item["usageCount"], item["id"]))["id"])
    shoot(page, "phone-recent-requests")


def test_laptop_width_fits_without_scrolling_tables(open_page, live):
    page = open_page(viewport=LAPTOP)
    enter_key(page, live.key)
    path, _ = wait_loaded(page)
    assert_shows(page, api_get(live, path).json())
    assert page.evaluate(OUTSIDE_THE_SCREEN) == []
    for scroller in page.locator(".table-scroll").all():
        if scroller.is_visible():
            expect(scroller).to_have_attribute("data-overflow", "")
    expect(page.locator(".scroll-hint")).to_have_count(4)
    for hint in page.locator(".scroll-hint").all():
        expect(hint).to_be_hidden()
    shoot(page, "laptop")


def test_largest_range_is_drawn_once_and_hover_or_resize_ask_for_nothing(open_page, live):
    """Close to 10,000 hourly buckets: one chart of every point; hovering it and resizing the
    window redraw the chart alone, with no new request and no new rendering of the page."""
    page = open_page()
    fresh = []  # usage asked afresh (polling asks with the ETag, and is answered 304 with nothing to render)
    page.on("request", lambda r: fresh.append(r.url) if "/v1/model-usage?" in r.url and "if-none-match" not in r.headers
            else None)
    enter_key(page, live.key)
    wait_loaded(page)
    page.select_option("#granularity", "hour")
    path, _ = choose_range(page, "2025-01-31", "2026-03-18", granularity="hour")
    body = api_get(live, path).json()
    assert len(body["timeSeries"]) == 412 * 24
    assert page.eval_on_selector("#chart", "c => Number(c.dataset.points)") == len(body["timeSeries"])
    renders = page.eval_on_selector("#main", "m => m.dataset.renders")
    assert 1 <= int(renders) <= len(fresh)  # an answer is rendered once, or not at all when superseded
    asked = len(fresh)

    box = page.locator("#chart .u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # the legend follows the cursor
    expect(page.locator("#chart .u-legend .u-value").first).not_to_have_text("whole range")
    points = {point["date"]: point for point in body["timeSeries"]}
    hovered = points[legend(page)[0]]
    assert legend(page) == [hovered["date"], money(hovered["cost"]), count(hovered["requests"])]
    page.mouse.move(0, 0)
    expect(page.locator("#chart .u-legend .u-value")).to_have_text(
        ["whole range", money(body["summary"]["totalCost"]), count(body["summary"]["totalRequests"])])

    width = page.eval_on_selector("#chart canvas", "c => c.getBoundingClientRect().width")
    page.set_viewport_size(PHONE)
    chart_width = "document.querySelector('#chart canvas').getBoundingClientRect().width"
    page.wait_for_function(f"w => {chart_width} < w", arg=width)
    page.set_viewport_size(LAPTOP)
    page.wait_for_function(f"w => {chart_width} === w", arg=width)
    assert page.eval_on_selector("#main", "m => m.dataset.renders") == renders
    assert len(fresh) == asked
    assert_shows(page, body)
    shoot(page, "largest-range")


def test_the_budgets_panel_shows_each_budgets_bar_and_its_alerts_delivery_state(open_page, own_live):
    """Writes budgets and usage: on a database of its own. The budgets' "now" is the real one."""
    write = {"Authorization": f"Bearer {own_live.write_key}"}
    made = []
    for body in ({"name": "Team month", "amount": 1, "period": "month", "thresholds": [50, 80, 100],
                  "webhookUrl": "https://93.184.216.34/hooks/budget"},  # public: accepted, never called here
                 {"name": "Summarizer day", "amount": 100, "period": "day", "modelConfigId": "cfg_summarizer",
                  "timezone": "America/New_York"}):
        response = requests.post(own_live.url + "/v1/budgets", json=body, headers=write, timeout=120)
        assert response.status_code == 201, response.text
        made.append(response.json())
    event = {"id": "budget-crossing", "timestamp": datetime.now(ZoneInfo("UTC")).isoformat(),
             "modelConfigId": "cfg_summarizer", "promptTokens": 10, "completionTokens": 5, "cost": 0.9}
    assert requests.post(own_live.url + "/v1/model-usage/events", json={"events": [event]}, headers=write,
                         timeout=120).json()["accepted"] == 1
    page = open_page(server=own_live)
    enter_key(page, own_live.key)
    wait_loaded(page)
    read = {"Authorization": f"Bearer {own_live.key}"}
    listed = requests.get(own_live.url + "/v1/budgets", headers=read, timeout=120).json()["data"]
    expect(page.locator("#budgets-list .budget")).to_have_count(len(listed))
    for budget in listed:
        card = page.locator(f'.budget[data-budget-id="{budget["id"]}"]')
        expect(card.locator("h3")).to_have_text(budget["name"])
        percent = budget["current"]["percentUsed"]
        expect(card.locator(".budget-percent")).to_have_text(f"{int(percent) if percent == int(percent) else percent}%")
        expect(card.locator(".mark")).to_have_count(len(budget["thresholds"]))
        expect(card.locator(".mark.crossed")).to_have_count(len(budget["current"]["crossed"]))
        alerts = requests.get(f'{own_live.url}/v1/budgets/{budget["id"]}/alerts', headers=read, timeout=120).json()
        items = card.locator(".budget-alerts li[data-alert-id]")
        expect(items).to_have_count(min(5, alerts["total"]))
        for index, alert in enumerate(alerts["data"][:5]):
            expect(items.nth(index).locator(".alert-threshold")).to_have_text(f'{alert["threshold"]}% reached')
            state = alert["delivery"]["state"] if alert["delivery"] else "none"
            expect(items.nth(index).locator(".badge")).to_have_class(re.compile(rf"\b{state}\b"))
    team = page.locator(f'.budget[data-budget-id="{made[0]["id"]}"]')
    expect(team.locator(".budget-alerts li[data-alert-id] .badge")).to_have_text(
        ["pending · 0 attempts", "pending · 0 attempts"])  # 80 % then 50 %, newest first
    current = next(budget for budget in listed if budget["id"] == made[0]["id"])["current"]
    scale = max(1, current["spent"], current["forecast"])  # the bar ends at the largest of amount, spent, forecast
    share = team.locator(".spent").evaluate("n => n.getBoundingClientRect().width / n.parentElement.getBoundingClientRect().width")
    assert abs(share - current["spent"] / scale) < 0.01
    shoot(page, "budgets")
