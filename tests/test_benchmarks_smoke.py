"""`python -m benchmarks --smoke` runs every part of the benchmark at a tiny size.

Timings are not checked (CI machines vary); that it runs, that the pre-aggregated
answers equal the raw-event baseline's, and that it leaves no database behind are.
"""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUERIES = ("last_7_days/hour", "last_30_days/day", "current_year/week", "365 days/day")


def test_smoke_run_prints_the_whole_table_with_equal_answers(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--workdir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.strip("|").split("|")]
                                              for line in result.stdout.splitlines() if line.startswith("| "))}
    assert "trivial: GET /v1/model-configs" in rows
    for name in QUERIES + tuple(f"{query} +config" for query in QUERIES):
        median, p95, _, baseline, _, same, http = rows[name]
        assert same == "yes", name  # the same answer as GROUP BY over the raw events
        assert float(median) > 0 and float(p95) >= float(median) and float(http) > 0
        assert float(baseline) >= 0  # written to 0.1 ms: a fast machine's tiny baseline reads 0.0
    for needle in ("seeding: 3,000 events", "2 workers", "4 workers", "peak RSS", "## Targets"):
        assert needle in result.stdout
    assert list(tmp_path.iterdir()) == []  # temporary databases deleted


def test_zones_smoke_run_compares_every_zone_with_utc_and_the_same_answers(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--zones", "--smoke", "--workdir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| query")]
    zones = ("UTC", "America/Los_Angeles", "Asia/Kolkata", "Asia/Kathmandu")
    assert [(row[0], row[1]) for row in rows] == [(query, zone) for query in (
        "last_30_days/day", "current_year/week", "365 days/day", "last_7_days/hour") for zone in zones]
    for row in rows:
        assert row[-1] == "yes", row  # local days answer exactly what the finer rollups answer
        assert float(row[2]) > 0 and float(row[4]) > 0
    for needle in ("start-up built", "ingestion in-process", "target: every zone within 1.5×"):
        assert needle in result.stdout
    assert list(tmp_path.iterdir()) == []
