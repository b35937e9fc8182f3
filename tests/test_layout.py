"""The package's layers: storage imports nothing of the services above it (no cycle through
start-up work), and nothing outside storage talks to the engine's driver itself."""
import ast
from pathlib import Path

import pytest

import usage_server

PACKAGE = Path(usage_server.__file__).resolve().parent
STORAGE = PACKAGE / "storage"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function, as absolute names."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(PACKAGE.parent).parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            found.update(f"{module}.{alias.name}" if node.module is None else module for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(STORAGE.rglob("*.py")), ids=lambda path: path.name)
def test_storage_imports_only_storage_of_this_package(path):
    ours = {name for name in imported_modules(path) if name.split(".")[0] == "usage_server"}
    assert all(name.startswith("usage_server.storage") for name in ours), ours


@pytest.mark.parametrize("path", sorted(set(PACKAGE.rglob("*.py")) - set(STORAGE.rglob("*.py"))),
                         ids=lambda path: path.name)
def test_only_storage_imports_the_database_drivers(path):
    drivers = {name for name in imported_modules(path) if name.split(".")[0] in ("sqlite3", "psycopg", "psycopg_pool")}
    assert drivers == set()


@pytest.mark.parametrize("path", sorted(set(PACKAGE.rglob("*.py")) - set(STORAGE.rglob("*.py"))),
                         ids=lambda path: path.name)
def test_nothing_outside_storage_decides_by_engine(path):
    """The engine's name may be shown (dataSource), never tested: no branch on it outside storage/."""
    text = path.read_text()
    for marker in ("engine_of(", "engine_for(", '== "postgresql"', '== "sqlite"', "is_url("):
        assert marker not in text, (path.name, marker)
