"""The rows several coordinators share: node rows, the leader lease and its fence,
session moves, and the notes a transaction sends to the other coordinators."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from taskgrid.coordinator import notes
from taskgrid.coordinator.errors import NotLeaderError
from taskgrid.coordinator.store import FENCE, Store
from tests.store.helpers import NOW, is_postgres, task_row, worker_row
from tests.support.wait import wait_until


def node_row(name: str, seen: dt.datetime = NOW) -> dict[str, object]:
    return {"node_name": name, "hostname": "h", "pid": 1, "listen": "127.0.0.1:1",
            "started_at": NOW, "last_seen": seen}


def postgres_only(store: Store) -> None:
    if not is_postgres(store):
        pytest.skip("several coordinators share PostgreSQL only")


def test_touch_node_inserts_then_refreshes_and_remove_node_drops_it(store):
    store.transact(lambda tx: tx.touch_node(node_row("a")))
    later = NOW + dt.timedelta(seconds=5)
    store.transact(lambda tx: tx.touch_node(node_row("a", later)))
    store.transact(lambda tx: tx.touch_node(node_row("b")))
    rows = store.transact(lambda tx: tx.nodes())
    assert [(r["node_name"], r["last_seen"]) for r in rows] == [("a", later), ("b", NOW)]
    store.transact(lambda tx: tx.remove_node("a"))
    assert [r["node_name"] for r in store.transact(lambda tx: tx.nodes())] == ["b"]


def test_one_leader_at_a_time_and_a_new_epoch_for_each_new_one(store):
    postgres_only(store)
    assert store.transact(lambda tx: tx.leader())["node_name"] == ""
    assert store.transact(lambda tx: tx.claim_leader("a", 30)) == 1
    assert store.transact(lambda tx: tx.claim_leader("b", 30)) is None  # a's lease runs
    assert store.transact(lambda tx: tx.claim_leader("a", 30)) == 1  # renewed, same epoch
    store.transact(lambda tx: tx.release_leader("b"))  # not b's to give: nothing changes
    assert store.transact(lambda tx: tx.claim_leader("b", 30)) is None
    store.transact(lambda tx: tx.release_leader("a"))
    assert store.transact(lambda tx: tx.claim_leader("b", 30)) == 2
    row = store.transact(lambda tx: tx.leader())
    assert (row["node_name"], row["epoch"]) == ("b", 2)
    assert store.transact(lambda tx: tx.claim_leader("a", 30)) is None


def test_a_lapsed_lease_is_taken_over(store):
    postgres_only(store)
    assert store.transact(lambda tx: tx.claim_leader("a", 0.01)) == 1  # a 10 ms lease
    # b is refused while a's lease runs, and takes over, with a new epoch, once it ran out
    assert wait_until(lambda: store.transact(lambda tx: tx.claim_leader("b", 30)),
                      timeout=5, desc="the lapsed lease taken over") == 2


def test_the_fence_lets_the_leader_write_and_stops_a_deposed_one(store):
    postgres_only(store)
    store.transact(lambda tx: tx.claim_leader("a", 30))
    store.transact(lambda tx: tx.check_fence("a", 1))  # leads: passes
    with pytest.raises(NotLeaderError):
        store.transact(lambda tx: tx.check_fence("a", 7))
    store.transact(lambda tx: tx.release_leader("a"))
    store.transact(lambda tx: tx.claim_leader("b", 30))

    async def stale_write() -> None:
        token = FENCE.set(("a", 1))
        try:
            await store.run(lambda tx: tx.insert_tasks([task_row(uuid="stale")]))
        finally:
            FENCE.reset(token)

    with pytest.raises(NotLeaderError, match="no longer leads"):
        asyncio.run(stale_write())
    assert store.transact(lambda tx: tx.existing_uuids(["stale"])) == set()


def test_adopt_worker_moves_a_live_session_with_its_token_only(store):
    wid = store.transact(lambda tx: tx.save_worker(None, worker_row("w", node_name="a",
                                                                    token_hash="t")))
    assert store.transact(lambda tx: tx.holds_session(wid, "a"))
    assert store.transact(lambda tx: tx.adopt_worker(wid, "wrong", "b", NOW)) is None
    later = NOW + dt.timedelta(seconds=3)
    row = store.transact(lambda tx: tx.adopt_worker(wid, "t", "b", later))
    assert row is not None and (row["node_name"], row["last_heartbeat"]) == ("b", later)
    assert store.transact(lambda tx: tx.worker_by_id(wid))["node_name"] == "b"
    assert not store.transact(lambda tx: tx.holds_session(wid, "a"))
    assert store.transact(lambda tx: tx.holds_session(wid, "b"))
    store.transact(lambda tx: tx.mark_worker_dead(wid, later))
    assert store.transact(lambda tx: tx.adopt_worker(wid, "t", "a", later)) is None
    assert not store.transact(lambda tx: tx.holds_session(wid, "b"))
    assert store.transact(lambda tx: tx.worker_by_id(wid + 100)) is None


def test_mark_worker_dead_from_the_rows_spares_a_worker_heard_from_since(store):
    wid = store.transact(lambda tx: tx.save_worker(None, worker_row("w")))
    store.transact(lambda tx: tx.touch_workers([(wid, NOW + dt.timedelta(seconds=1), 0)]))
    assert not store.transact(lambda tx: tx.mark_worker_dead(wid, NOW, silent_since=NOW))
    assert store.transact(lambda tx: tx.mark_worker_dead(
        wid, NOW, silent_since=NOW + dt.timedelta(seconds=1)))


def test_a_transaction_with_peers_notifies_what_it_committed_and_only_then(store, db_url):
    postgres_only(store)
    sender = Store(db_url, node="sender")
    sender.peers = 1

    async def run() -> list[dict[str, object]]:
        got: list[dict[str, object]] = []
        listening = store.notifications()
        assert await anext(listening) is None
        wid = sender.transact(lambda tx: tx.save_worker(None, worker_row("w")))
        ids = sender.transact(lambda tx: tx.insert_tasks([task_row(uuid="n1")]))

        def fail(tx):
            tx.insert_tasks([task_row(uuid="never")])
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            sender.transact(fail)
        sender.transact(lambda tx: tx.note_changed(ids))
        sender.transact(lambda tx: tx.update_workers([(wid, {"status": "DISABLED"})]))
        while len(got) < 3:
            payload = await asyncio.wait_for(anext(listening), 10)
            assert payload is not None
            msg = json.loads(payload)
            if msg["node"] == "sender":  # not the listener's own hello
                got.append(msg)
        await listening.aclose()
        return got

    try:
        got = asyncio.run(run())
    finally:
        sender.close()
    assert all(m["node"] == "sender" for m in got)
    assert got[0]["work"] == {"kinds": [["main", "f", ""]], "count": 1, "any": False}
    assert got[1] == {"node": "sender", "tasks": [got[1]["tasks"][0]]}
    assert list(got[2]["workers"].values()) == ["DISABLED"]


def test_notes_split_long_lists_below_the_payload_limit():
    n = notes.Notes("me")
    n.changed(range(10**15, 10**15 + 2000))
    n.stops.update((i, 1) for i in range(500))
    payloads = n.payloads()
    assert all(len(p) < notes.MAX_PAYLOAD for p in payloads)
    back = [notes.parse(p) for p in payloads]
    assert sum(len(m.get("tasks", [])) for m in back if m) == 2000
    assert sum(len(m.get("stops", [])) for m in back if m) == 500
    assert notes.parse("not json") is None and notes.parse('{"x": 1}') is None


def test_coordinators_starting_together_migrate_in_turn(db_url, tmp_path):
    """Several coordinators starting at once on a fresh database: one migrates, the others
    wait for it and find nothing left to do."""
    import concurrent.futures

    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL")
    stores = [Store(db_url) for _ in range(4)]
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(s.migrate) for s in stores]:
                f.result()
        assert stores[0].transact(lambda tx: tx.leader())["epoch"] == 0
    finally:
        for s in stores:
            s.close()


def test_work_this_coordinator_takes_itself_is_not_announced():
    spare = {("main", "f"): 2}
    n = notes.Notes("me", spare)
    n.queued([(("main", "f", ""), 2)], timed=False)
    assert not n and n.payloads() == []  # two parked slots here take both
    n.queued([(("main", "f", ""), 3), (("main", "g", ""), 1), (("main", "f", "w9"), 1)],
             timed=False)
    work = json.loads(n.payloads()[0])["work"]
    assert work == {"kinds": [["main", "f", ""], ["main", "f", "w9"], ["main", "g", ""]],
                    "count": 3, "any": False}  # 1 f beyond the spare slots, 1 g, 1 targeted
