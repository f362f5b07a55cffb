"""The Store itself: transactions, the executor, an unreachable database, the writer lock."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest
import sqlalchemy as sa

from taskgrid.coordinator.errors import StoreUnavailableError, WriterLockError
from taskgrid.coordinator.store import WRITER_LOCK_KEY, Store
from tests.store.helpers import task_row
from tests.support.wait import wait_until


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


# -- one coordinator per database --------------------------------------------------------------


def backend_pid(s: Store) -> int:
    assert s._lock_conn is not None
    return int(s._lock_conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def lock_once_released(s: Store) -> None:
    """Take the writer lock a closed Store held.

    PostgreSQL drops a session's advisory lock when its backend exits, a moment after the
    client closed the socket: Store.close() does not wait for that, so neither does this
    more than a few seconds.
    """
    if s.is_sqlite:
        s.lock_writer()  # flock: released as close() returns
        return

    def took() -> bool:
        try:
            s.lock_writer()
        except WriterLockError:
            return False
        return True

    wait_until(took, timeout=5, desc="the closed holder's advisory lock to be released")


def test_writer_lock_admits_one_store_per_database(db_url, store, open_store):
    first, second, third = open_store(), open_store(), open_store()
    first.lock_writer()
    assert first.check_writer()
    with pytest.raises(WriterLockError, match="already served by another coordinator") as info:
        second.lock_writer()
    message = str(info.value)
    if store.is_sqlite:
        path = sa.engine.make_url(db_url).database
        assert f"pid {os.getpid()}" in message
        assert f"lock file {os.path.abspath(path)}.lock" in message
    else:
        assert f"backend pid {backend_pid(first)} from local socket" in message
        assert "run one coordinator per database" in message
    assert first.check_writer()  # the refusal did not disturb the holder
    first.close()
    lock_once_released(third)  # released by close()
    assert third.check_writer()
    with pytest.raises(WriterLockError):
        second.lock_writer()
    third.close()
    lock_once_released(second)
    assert second.check_writer()


def test_writer_lock_on_postgres_is_the_advisory_lock(store, open_store):
    if store.is_sqlite:
        pytest.skip("PostgreSQL advisory lock")
    holder = open_store()
    holder.lock_writer()

    def held():
        return store.transact(lambda tx: tx.conn.execute(sa.text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :key AND granted"),
            {"key": WRITER_LOCK_KEY}).scalars().all())

    assert held() == [backend_pid(holder)]
    holder.close()
    wait_until(lambda: held() == [], timeout=5, desc="the advisory lock released")


def test_check_writer_takes_the_lock_again_after_its_connection_dies(store, open_store):
    if store.is_sqlite:
        pytest.skip("SQLite's lock is a file lock: no connection to lose")
    holder, rival = open_store(), open_store()
    holder.lock_writer()

    def kill(pid):
        store.transact(lambda tx: tx.conn.execute(
            sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}))

    old = backend_pid(holder)
    kill(old)
    assert holder.check_writer()  # reconnected and took the lock again
    new = backend_pid(holder)
    assert new != old
    with pytest.raises(WriterLockError, match=rf"backend pid {new}\b"):
        rival.lock_writer()
    kill(new)
    rival.lock_writer()  # someone else took it while the holder was cut off
    assert not holder.check_writer()
    assert rival.check_writer()


def test_writer_lock_on_sqlite_records_the_owner_pid(store, db_url):
    if not store.is_sqlite:
        pytest.skip("SQLite lock file")
    store.lock_writer()
    path = sa.engine.make_url(db_url).database + ".lock"
    with open(path, encoding="ascii") as f:
        assert f.read() == f"{os.getpid()}\n"
    assert store.check_writer()


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
