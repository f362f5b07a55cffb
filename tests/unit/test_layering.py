"""Import rules of style.md 2.1, checked by walking the imports with ast."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def files(folder: str) -> list[pathlib.Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_worker_and_client_never_import_the_coordinator():
    for folder in ("worker", "client"):
        for path in files(folder):
            bad = [m for m in imports(path) if m.startswith("taskgrid.coordinator")]
            assert not bad, f"{path} imports {bad}"


#: the store layer: the Store and its Tx (store.py) with its query groups, the hot statements
#: and the schema
STORE_LAYER = {"store.py", "txbase.py", "runrows.py", "workerrows.py", "hotsql.py", "schema.py"}


def test_only_the_store_opens_engines_or_runs_sql():
    """The store layer is store.py with its query groups, hot statements and schema."""
    drivers = ("sqlalchemy", "sqlite3", "psycopg")
    for path in files("coordinator"):
        if path.name in STORE_LAYER or "migrations" in path.parts:
            continue
        bad = [m for m in imports(path) if m.split(".")[0] in drivers]
        assert not bad, f"{path} imports {bad}"


def test_generated_stubs_only_behind_the_boundary():
    allowed = {"servicers", "app.py", "agent.py", "delivery.py", "scheduler.py", "_channel.py",
               "_convert.py", "_requests.py", "_resend.py", "_manage.py", "aio.py"}
    for folder in ("coordinator", "worker", "client"):
        for path in files(folder):
            uses = [m for m in imports(path) if m.startswith("taskgrid.v1")]
            if uses:
                assert allowed & set(path.parts), f"{path} imports generated stubs {uses}"


def test_no_status_literal_outside_lifecycle():
    statuses = ('"QUEUED"', '"ASSIGNED"', '"RUNNING"', '"COMPLETED"', '"FAILED"', '"TIMEOUT"',
                '"STOPPED"', '"EXPIRED"')
    for path in files("coordinator"):
        if path.name == "lifecycle.py" or "migrations" in path.parts:
            continue
        text = path.read_text()
        assert not [s for s in statuses if s in text], f"{path} writes a status literal"
