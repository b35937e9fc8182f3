"""The wheel: built without a warning, and carrying every file the server reads besides its code."""
import shutil
import subprocess
import sys
import zipfile

from gunicorn_server import REPO

SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "usage_server", "seed")
DATA = ("usage_server/storage/migrations/sqlite/0001_initial.sql", "usage_server/templates/dashboard.html",
        "usage_server/templates/docs.html", "usage_server/static/dashboard.css", "usage_server/static/dashboard.js",
        "usage_server/static/vendor/uplot/uPlot.iife.min.js", "usage_server/static/vendor/uplot/uPlot.min.css",
        "usage_server/static/vendor/uplot/LICENSE")


def test_the_wheel_builds_without_warnings_and_carries_the_data_files(tmp_path):
    """Built offline with this environment's setuptools, from a copy (a build writes into its source)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "--wheel-dir", str(tmp_path / "dist"), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "absent from the `packages` configuration" not in output
    assert "Warning" not in output, output  # setuptools' warnings (pip's own are "WARNING:")

    [wheel] = (tmp_path / "dist").glob("usage_server-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert set(DATA) <= names, set(DATA) - names
        for step in (REPO / "usage_server" / "storage" / "migrations").glob("*/*.sql"):
            assert archive.read(str(step.relative_to(REPO))) == step.read_bytes()  # every migration, as a file
    assert not any("__pycache__" in name or name.startswith(("tests/", "benchmarks/")) for name in names)
