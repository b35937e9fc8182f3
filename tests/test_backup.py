"""`usage-server backup` and `restore`: a consistent online copy taken while 4 writer processes
ingest, restored and compared answer by answer with the oracle summed from the copy's own
events; no batch torn. PostgreSQL: the pg_dump and pg_restore commands, password left out."""
import multiprocessing
import shlex
import sqlite3
from datetime import date, datetime, timedelta, timezone

import pytest

from conftest import FROZEN_NOW, bearer
from postgres_cluster import PASSWORD
from oracle import expected_body
from support import catalogue_prices, prepare_database
from usage_server import create_app

FORK = multiprocessing.get_context("fork")
WRITERS, BATCH = 4, 20
CONFIGS = {
    "cfg_priced": {"modelId": "gpt-4o", "provider": "OpenAI", "modelName": "GPT-4o"},
    "cfg_flat": {"modelId": "house-model", "provider": "Acme", "modelName": "house-model"},
}
FIRST_DAY = date(2026, 2, 1)


def event(writer: int, batch: int, index: int) -> dict:
    """Every event is a function of its id, so the oracle rebuilds it from the id alone."""
    number = (writer * 1_000_003 + batch * 101 + index) % 9973
    instant = datetime(2026, 2, 1, tzinfo=timezone.utc) + timedelta(seconds=number * 421 + index)
    config_id = sorted(CONFIGS)[number % 2]
    item = {"id": f"w{writer}-b{batch}-{index}", "timestamp": instant.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "modelConfigId": config_id, "promptTokens": number % 3000, "completionTokens": number % 700,
            "billingSource": "user" if number % 3 else "platform"}
    if config_id == "cfg_flat":
        item["cost"] = (number % 500) / 10**4
    return item


def event_of(event_id: str) -> dict:
    writer, batch, index = (int(part[1:]) if part[0] in "wb" else int(part) for part in event_id.split("-"))
    return event(writer, batch, index)


def write(database, key, writer, written, stop) -> None:
    """A writer process: batches of BATCH events until told to stop, counting each stored one."""
    client = create_app({"DATABASE": database, "BUSY_TIMEOUT_MS": 600_000}).test_client()
    batch = 0
    while not stop.is_set():
        events = [event(writer, batch, index) for index in range(BATCH)]
        response = client.post("/v1/model-usage/events", json={"events": events}, headers=bearer(key))
        assert response.status_code == 200, response.get_json()
        with written.get_lock():
            written.value += 1
        batch += 1


def wait_for(written, count) -> None:
    """Block until the writers stored `count` batches in all (a counter they raise, no sleep)."""
    while True:
        with written.get_lock():
            if written.value >= count:
                return


@pytest.mark.sqlite_only
@pytest.mark.slow
def test_a_backup_taken_while_four_writers_ingest_restores_every_answer(database, tmp_path, monkeypatch):
    key = prepare_database(database)["acme"]
    app = create_app({"TESTING": True, "DATABASE": database})
    client = app.test_client()
    for config_id, config in CONFIGS.items():
        response = client.post("/v1/model-configs", headers=bearer(key), json={"id": config_id, **config})
        assert response.status_code == 201
    written, stop = FORK.Value("i", 0), FORK.Event()
    writers = [FORK.Process(target=write, args=(database, key, writer, written, stop)) for writer in range(WRITERS)]
    for process in writers:
        process.start()
    try:
        wait_for(written, 2 * WRITERS)
        backup = tmp_path / "backup.sqlite"
        result = app.test_cli_runner().invoke(args=["backup", str(backup)])
        assert result.exit_code == 0, result.output
        at_backup = written.value
        wait_for(written, at_backup + 2 * WRITERS)  # the writers went on, never stopped by the copy
    finally:
        stop.set()
        for process in writers:
            process.join(120)
    assert [process.exitcode for process in writers] == [0] * WRITERS

    copy = sqlite3.connect(backup)
    assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    ids = [row[0] for row in copy.execute("SELECT event_id FROM usage_event")]
    copy.close()
    batches = {}
    for event_id in ids:
        batches.setdefault(event_id.rsplit("-", 1)[0], []).append(event_id)
    assert all(len(items) == BATCH for items in batches.values())  # whole batches only
    assert 2 * WRITERS <= len(batches) <= at_backup + WRITERS  # the copy is of some instant while writing
    assert result.output.startswith(f"Backed up {database} to {backup} (integrity check: ok): {len(ids)} events")
    source = create_app({"DATABASE": database}, prepare_database=False).test_client()
    live = source.get("/v1/model-usage?startDate=2026-01-01&endDate=2026-03-31", headers=bearer(key)).get_json()
    assert live["summary"]["totalRequests"] > len(ids)  # the source went on past the copy

    restored_path = tmp_path / "restored.sqlite"
    restored = create_app({"TESTING": True, "DATABASE": str(restored_path)}, prepare_database=False)
    result = restored.test_cli_runner().invoke(args=["restore", str(backup)])
    assert result.exit_code == 0, result.output
    assert f": {len(ids)} events of 1 owners" in result.output
    reader = create_app({"TESTING": True, "DATABASE": str(restored_path)}).test_client()
    events = [event_of(event_id) for event_id in ids]
    prices = {model_id: tuple(str(price) for price in pair) for model_id, pair in catalogue_prices().items()}
    checked = 0
    monkeypatch.setattr("usage_server.api.utc_now", lambda: FROZEN_NOW)
    for zone in ("UTC", "Asia/Kathmandu", "America/Los_Angeles"):
        for start, end, granularity in [(FIRST_DAY, date(2026, 3, 18), "day"), (FIRST_DAY, date(2026, 3, 18), "week"),
                                        (date(2026, 1, 1), date(2026, 3, 18), "month"),
                                        (FIRST_DAY, FIRST_DAY + timedelta(days=2), "hour")]:
            for config_id in (None, "cfg_flat"):
                query = {"startDate": start.isoformat(), "endDate": end.isoformat(), "granularity": granularity,
                         "timezone": zone, **({"modelConfigId": config_id} if config_id else {})}
                body = reader.get("/v1/model-usage", query_string=query, headers=bearer(key)).get_json()
                assert body == expected_body(events, CONFIGS, prices, start, end, granularity, zone, config_id,
                                             data_source="usage-server-sqlite"), query
                checked += 1
    for config_id in CONFIGS:
        details = reader.get(f"/v1/model-usage/{config_id}?limit=100", headers=bearer(key)).get_json()
        mine = sorted((event for event in events if event["modelConfigId"] == config_id),
                      key=lambda item: (item["timestamp"], item["id"]), reverse=True)
        assert [item["timestamp"][:19] for item in details["recentUsage"]] == [item["timestamp"][:19] for item in mine[:100]]
        assert {item["id"] for item in details["recentUsage"]} <= set(ids)
    assert checked == 24


@pytest.mark.sqlite_only
def test_restore_checks_its_source_and_refuses_to_overwrite_data(database, tmp_path):
    key = prepare_database(database)["acme"]
    app = create_app({"TESTING": True, "DATABASE": database})
    runner = app.test_cli_runner()
    backup = tmp_path / "backup.sqlite"
    assert runner.invoke(args=["backup", str(backup)]).exit_code == 0
    again = runner.invoke(args=["backup", str(backup)])
    assert again.exit_code == 1 and "exists: back up to a new file" in again.output
    refused = runner.invoke(args=["restore", str(backup)])
    assert refused.exit_code == 1 and "holds data: restore over it only with --force" in refused.output
    assert runner.invoke(args=["restore", "--force", str(backup)]).exit_code == 0
    assert app.test_client().get("/v1/model-configs", headers=bearer(key)).status_code == 200
    (tmp_path / "not.sqlite").write_bytes(b"not a database at all, just text")
    (tmp_path / "other.sqlite").write_bytes(b"")
    sqlite3.connect(tmp_path / "foreign.sqlite").execute("CREATE TABLE t (x)").connection.close()
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(backup.read_bytes()[:8192])
    for source, message in [("not.sqlite", "is not an SQLite database"), ("missing.sqlite", "does not exist"),
                            ("foreign.sqlite", "is not a usage-server database"),
                            ("damaged.sqlite", "")]:
        result = runner.invoke(args=["restore", "--force", str(tmp_path / source)])
        assert result.exit_code == 1 and message in result.output, (source, result.output)
        assert "Traceback" not in result.output
    assert app.test_client().get("/v1/model-configs", headers=bearer(key)).status_code == 200  # untouched


def test_postgresql_backup_and_restore_print_the_tools_commands(postgres, tmp_path):
    url = postgres.new_schema()
    assert PASSWORD in url
    prepare_database(url)
    runner = create_app({"TESTING": True, "DATABASE": url}).test_cli_runner()
    backup = runner.invoke(args=["backup", str(tmp_path / "usage.dump")])
    assert backup.exit_code == 1
    named = url.replace(f":{PASSWORD}@", ":***@")
    assert shlex.join(["pg_dump", "--format=custom", f"--file={tmp_path / 'usage.dump'}", f"--dbname={named}"]) \
        in backup.output
    restore = runner.invoke(args=["restore", str(tmp_path / "usage.dump")])
    assert restore.exit_code == 1 and "pg_restore --clean --if-exists" in restore.output
    assert shlex.quote(f"--dbname={named}") in restore.output
    assert PASSWORD not in backup.output + restore.output
