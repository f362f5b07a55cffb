"""Worker rows: registration, liveness, heartbeats, the purge of long-dead workers."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests.store.helpers import NOW, worker_row

HOUR = dt.timedelta(hours=1)


def test_save_worker_inserts_then_overwrites(store):
    wid = store.transact(lambda tx: tx.save_worker(None, worker_row("w1", pid=11)))
    other = store.transact(lambda tx: tx.save_worker(None, worker_row("w2")))
    assert wid != other
    row = store.transact(lambda tx: tx.worker_by_name("w1"))
    assert row["id"] == wid and row["pid"] == 11 and row["alive"] is True
    assert row["first_heartbeat"] == NOW and row["first_heartbeat"].tzinfo is not None
    assert row["lost_at"] is None
    again = worker_row("w1", pid=12, first_heartbeat=NOW + HOUR, last_heartbeat=NOW + HOUR)
    assert store.transact(lambda tx: tx.save_worker(wid, again)) == wid
    row = store.transact(lambda tx: tx.worker_by_name("w1"))
    assert row["id"] == wid and row["pid"] == 12 and row["last_heartbeat"] == NOW + HOUR
    assert store.transact(lambda tx: tx.worker_by_name("nobody")) is None
    assert [w["worker_name"] for w in store.transact(lambda tx: tx.workers())] == ["w1", "w2"]


def test_worker_names_are_unique(store):
    store.transact(lambda tx: tx.save_worker(None, worker_row("w1")))
    with pytest.raises(sa.exc.IntegrityError):
        store.transact(lambda tx: tx.save_worker(None, worker_row("w1")))
    assert len(store.transact(lambda tx: tx.workers())) == 1


def test_workers_alive_only_and_update_workers(store):
    ids = [store.transact(lambda tx, n=n: tx.save_worker(None, worker_row(n)))
           for n in ("a", "b", "c")]
    store.transact(lambda tx: tx.update_workers([
        (ids[1], {"alive": False, "lost_at": NOW + HOUR}),
        (ids[2], {"status": "DISABLED"}),
        (ids[0], {"rss_bytes": 7, "status": "KILL"})]))
    store.transact(lambda tx: tx.update_workers([]))
    rows = store.transact(lambda tx: tx.workers())
    assert [w["id"] for w in rows] == ids  # by id
    assert [(w["status"], w["alive"]) for w in rows] == [
        ("KILL", True), ("ACTIVE", False), ("DISABLED", True)]
    assert rows[1]["lost_at"] == NOW + HOUR and rows[1]["lost_at"].tzinfo is not None
    assert rows[0]["rss_bytes"] == 7
    assert [w["worker_name"] for w in store.transact(lambda tx: tx.workers(alive_only=True))] == [
        "a", "c"]


def test_touch_workers_writes_heartbeats_in_one_go(store):
    a = store.transact(lambda tx: tx.save_worker(None, worker_row("a")))
    b = store.transact(lambda tx: tx.save_worker(None, worker_row("b")))
    c = store.transact(lambda tx: tx.save_worker(None, worker_row("c")))
    beat = NOW + dt.timedelta(seconds=2.5)
    store.transact(lambda tx: tx.touch_workers([(a, beat, 1000), (c, beat + HOUR, 2 ** 40)]))
    store.transact(lambda tx: tx.touch_workers([]))
    rows = {w["id"]: w for w in store.transact(lambda tx: tx.workers())}
    assert (rows[a]["last_heartbeat"], rows[a]["rss_bytes"]) == (beat, 1000)
    assert (rows[c]["last_heartbeat"], rows[c]["rss_bytes"]) == (beat + HOUR, 2 ** 40)
    assert (rows[b]["last_heartbeat"], rows[b]["rss_bytes"]) == (NOW, 0)
    assert rows[a]["first_heartbeat"] == NOW


def test_lost_workers_purge(store):
    assert store.transact(lambda tx: tx.earliest_lost_worker()) is None
    assert store.transact(lambda tx: tx.delete_lost_workers(NOW + 100 * HOUR)) == []
    live = store.transact(lambda tx: tx.save_worker(None, worker_row("live")))
    store.transact(lambda tx: tx.save_worker(None, worker_row(
        "old", alive=False, lost_at=NOW - 2 * HOUR)))
    store.transact(lambda tx: tx.save_worker(None, worker_row(
        "older", alive=False, lost_at=NOW - 3 * HOUR)))
    store.transact(lambda tx: tx.save_worker(None, worker_row("recent", alive=False,
                                                              lost_at=NOW)))
    # alive with a stale lost_at (registered again after being lost): never purged
    store.transact(lambda tx: tx.update_workers([(live, {"lost_at": NOW - 9 * HOUR})]))
    assert store.transact(lambda tx: tx.earliest_lost_worker()) == NOW - 3 * HOUR
    assert store.transact(lambda tx: tx.delete_lost_workers(NOW - 3 * HOUR)) == []  # strict <
    assert sorted(store.transact(lambda tx: tx.delete_lost_workers(NOW - HOUR))) == [
        "old", "older"]
    assert store.transact(lambda tx: tx.earliest_lost_worker()) == NOW
    assert [w["worker_name"] for w in store.transact(lambda tx: tx.workers())] == [
        "live", "recent"]
    assert store.transact(lambda tx: tx.delete_lost_workers(NOW + HOUR)) == ["recent"]
    assert store.transact(lambda tx: tx.earliest_lost_worker()) is None


def test_mark_worker_dead_keeps_the_first_lost_at(store):
    wid = store.transact(lambda tx: tx.save_worker(None, worker_row("w")))
    assert store.transact(lambda tx: tx.mark_worker_dead(wid, NOW + HOUR)) is True
    # a second pass (the reaper racing a declared death) changes nothing
    assert store.transact(lambda tx: tx.mark_worker_dead(wid, NOW + 2 * HOUR)) is False
    row = store.transact(lambda tx: tx.worker_by_name("w"))
    assert row["alive"] is False and row["lost_at"] == NOW + HOUR
