"""The Store itself: transactions, the executor, an unreachable database, the writer lock."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest
import sqlalchemy as sa

from taskgrid.coordinator.errors import StoreUnavailableError, WriterLockError
from taskgrid.coordinator.store import Store
from tests.store.helpers import task_row


def test_transact_commits_on_return_and_rolls_back_on_error(store):
    store.transact(lambda tx: tx.insert_tasks([task_row(uuid="kept")]))

    def fail(tx):
        tx.insert_tasks([task_row(uuid="dropped")])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.transact(fail)
    assert store.transact(lambda tx: tx.existing_uuids(["kept", "dropped"])) == {"kept"}


def _where_run_runs(store: Store) -> tuple[str, int, int]:
    def body(tx):
        return threading.current_thread().name, threading.get_ident(), tx.insert_tasks(
            [task_row()])[0]

    before = store.transactions
    name, ident, task_id = asyncio.run(store.run(body))
    assert store.transactions == before + 1
    assert store.transact(lambda tx: tx.tasks_by_ids([task_id]))[task_id]["id"] == task_id
    return name, ident, task_id


def test_run_uses_store_threads_where_commits_are_slow(db_url, tmp_path):
    """PostgreSQL (a round trip per statement) and durable SQLite (an fsync per commit)."""
    url = db_url if db_url.startswith("postgresql") else f"sqlite:///{tmp_path / 'd.sqlite'}"
    slow = Store(url, durable=True)
    try:
        slow.migrate()
        name, ident, _ = _where_run_runs(slow)
        assert name.startswith("taskgrid-store") and ident != threading.get_ident()
    finally:
        slow.close()


def test_run_runs_on_the_event_loop_on_sqlite(store):
    if not store.is_sqlite:
        pytest.skip("SQLite without fsync per commit only")
    _, ident, _ = _where_run_runs(store)
    assert ident == threading.get_ident()  # asyncio.run's loop runs on this thread


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_transact_raises_store_unavailable_for_an_unreachable_database(db_url, tmp_path):
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}"
    else:
        url = f"postgresql+psycopg://nobody@127.0.0.1:{free_tcp_port()}/x?connect_timeout=5"
    dead = Store(url)
    try:
        with pytest.raises(StoreUnavailableError, match="database unavailable") as info:
            dead.transact(lambda tx: tx.workers())
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)
        with pytest.raises(StoreUnavailableError):
            asyncio.run(dead.run(lambda tx: tx.existing_uuids(["x"])))
    finally:
        dead.close()


def test_close_is_idempotent_and_finishes_queued_work(db_url):
    s = Store(db_url)
    s.migrate()

    async def queue_some():
        return await asyncio.gather(*(s.run(lambda tx, i=i: tx.insert_tasks(
            [task_row(uuid=f"q{i}")])) for i in range(5)))

    assert len(asyncio.run(queue_some())) == 5
    s.close()
    s.close()
    again = Store(db_url)
    try:
        assert len(again.transact(lambda tx: tx.existing_uuids([f"q{i}" for i in range(5)]))) == 5
    finally:
        again.close()


# -- one coordinator per SQLite file; many on PostgreSQL ------------------------------------------


def test_writer_lock_admits_one_store_per_sqlite_file(db_url, store, open_store):
    if not store.is_sqlite:
        pytest.skip("SQLite lock file")
    first, second, third = open_store(), open_store(), open_store()
    first.lock_writer()
    with pytest.raises(WriterLockError, match="already served by another coordinator") as info:
        second.lock_writer()
    path = sa.engine.make_url(db_url).database
    assert f"pid {os.getpid()}" in str(info.value)
    assert f"lock file {os.path.abspath(path)}.lock" in str(info.value)
    first.close()
    third.lock_writer()  # flock: released as close() returns
    with pytest.raises(WriterLockError):
        second.lock_writer()
    third.close()
    second.lock_writer()


def test_postgres_takes_any_number_of_coordinators(store, open_store):
    if store.is_sqlite:
        pytest.skip("PostgreSQL")
    stores = [open_store() for _ in range(3)]
    for s in stores:
        s.lock_writer()  # nothing to lock: leadership is elected instead
    for i, s in enumerate(stores):
        s.transact(lambda tx, i=i: tx.insert_tasks([task_row(uuid=f"from-{i}")]))
    assert store.transact(lambda tx: tx.existing_uuids([f"from-{i}" for i in range(3)])) == {
        f"from-{i}" for i in range(3)}


def test_writer_lock_on_sqlite_records_the_owner_pid(store, db_url):
    if not store.is_sqlite:
        pytest.skip("SQLite lock file")
    store.lock_writer()
    path = sa.engine.make_url(db_url).database + ".lock"
    with open(path, encoding="ascii") as f:
        assert f.read() == f"{os.getpid()}\n"


def test_durable_sqlite_fsyncs_every_commit(tmp_path):
    import sqlalchemy as sa

    from taskgrid.coordinator.store import Store
    for durable, expected in ((False, 1), (True, 2)):  # PRAGMA synchronous: NORMAL=1, FULL=2
        s = Store(f"sqlite:///{tmp_path / f'd{durable}.sqlite'}", durable=durable)
        try:
            with s.engine.connect() as conn:
                assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == expected
        finally:
            s.close()


def test_run_group_commits_concurrent_bodies_and_isolates_a_failing_one(store, tasks):
    """Bodies queued together commit together; one that raises is rerun alone and fails alone."""
    import asyncio

    from tests.store.helpers import task_row

    def good(i):
        return store.run(lambda tx: tx.insert_tasks([task_row(uuid=f"g{i}")])[0])

    def poisoned(tx):
        tx.insert_tasks([task_row(uuid="poison")])
        raise ValueError("poisoned body")

    async def together(*bodies):
        return await asyncio.gather(*bodies, return_exceptions=True)

    before_tx, before_bodies = store.transactions, store.bodies
    ids = asyncio.run(together(*(good(i) for i in range(40))))
    assert all(isinstance(r, int) for r in ids)
    assert store.bodies - before_bodies == 40
    assert store.transactions - before_tx <= 3  # the first alone, the rest in one or two

    results = asyncio.run(together(*(good(i) for i in range(40, 80)), store.run(poisoned)))
    assert all(isinstance(r, int) for r in results[:40])
    assert isinstance(results[40], ValueError)
    wanted = ["poison", *(f"g{i}" for i in range(80))]
    kept = store.transact(lambda tx: tx.existing_uuids(wanted))
    assert kept == {f"g{i}" for i in range(80)}  # the poisoned body's write rolled back
