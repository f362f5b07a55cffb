"""Run records and live output chunks."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.store.helpers import NOW, run_row

LATER = NOW + dt.timedelta(seconds=90.25)


@pytest.fixture
def task_ids(tasks):
    return tasks.add_many(2)


def test_insert_runs_returns_ids_in_order(store, task_ids):
    t1, t2 = task_ids
    rows = [run_row(t1, 1, worker_name="a"), run_row(t2, 1, worker_name="b"),
            run_row(t1, 2, worker_name="c")]
    ids = store.transact(lambda tx: tx.insert_runs(rows))
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert store.transact(lambda tx: tx.insert_runs([])) == []
    runs = store.transact(lambda tx: tx.runs_of(t1, latest_only=False))
    assert [(r["id"], r["attempt"], r["worker_name"]) for r in runs] == [
        (ids[0], 1, "a"), (ids[2], 2, "c")]


def test_run_ids_and_runs_by_ref(store, task_ids):
    t1, t2 = task_ids
    r11, r12, r21 = store.transact(lambda tx: tx.insert_runs(
        [run_row(t1, 1), run_row(t1, 2), run_row(t2, 1)]))
    store.transact(lambda tx: tx.insert_chunks([{"run_id": r12, "seq": 1, "data": "x",
                                                  "clear": False}]))
    refs = [(t1, 1), (t1, 2), (t2, 1), (t2, 9), (10**9, 1)]
    assert store.transact(lambda tx: tx.run_ids(refs)) == {(t1, 1): r11, (t1, 2): r12,
                                                          (t2, 1): r21}
    assert store.transact(lambda tx: tx.runs_by_ref(refs)) == {
        (t1, 1): (r11, False), (t1, 2): (r12, True), (t2, 1): (r21, False)}
    assert store.transact(lambda tx: tx.runs_by_ref({(t1, 2)})) == {(t1, 2): (r12, True)}
    assert store.transact(lambda tx: tx.run_ids([])) == {}
    assert store.transact(lambda tx: tx.runs_by_ref([])) == {}


def test_runs_by_ref_accepts_any_iterable(store, task_ids):
    t1, _ = task_ids
    run_id = store.transact(lambda tx: tx.insert_runs([run_row(t1, 1)]))[0]
    assert store.transact(lambda tx: tx.run_ids(r for r in [(t1, 1)])) == {(t1, 1): run_id}


def test_runs_of_oldest_first_or_latest(store, task_ids):
    t1, t2 = task_ids
    ids = store.transact(lambda tx: tx.insert_runs([run_row(t1, a) for a in (1, 2, 3)]))
    assert [r["id"] for r in store.transact(lambda tx: tx.runs_of(t1, False))] == ids
    latest = store.transact(lambda tx: tx.runs_of(t1, latest_only=True))
    assert [r["id"] for r in latest] == [ids[-1]]
    assert latest[0]["start_time"] == NOW and latest[0]["start_time"].tzinfo is not None
    assert latest[0]["stop_time"] is None
    assert store.transact(lambda tx: tx.runs_of(t2, True)) == []
    assert store.transact(lambda tx: tx.runs_of(t2, False)) == []


def test_update_runs_writes_several_shapes(store, task_ids):
    t1, t2 = task_ids
    a, b, c = store.transact(lambda tx: tx.insert_runs(
        [run_row(t1, 1), run_row(t1, 2), run_row(t2, 1)]))
    done = {"status": "COMPLETED", "stop_time": LATER, "run_result": "3", "traceback": "",
            "run_output": "out"}
    store.transact(lambda tx: tx.update_runs([
        (a, done), (c, {**done, "run_result": "4"}), (b, {"status": "FAILED",
                                                          "traceback": "boom"})]))
    store.transact(lambda tx: tx.update_runs([]))
    runs = {r["id"]: r for t in (t1, t2) for r in store.transact(lambda tx, t=t: tx.runs_of(
        t, False))}
    assert (runs[a]["status"], runs[a]["run_result"], runs[a]["run_output"]) == (
        "COMPLETED", "3", "out")
    assert runs[a]["stop_time"] == LATER and runs[a]["stop_time"].tzinfo is not None
    assert runs[c]["run_result"] == "4"
    assert (runs[b]["status"], runs[b]["traceback"], runs[b]["stop_time"]) == (
        "FAILED", "boom", None)


def test_delete_runs_removes_them_and_their_chunks(store, task_ids):
    t1, _ = task_ids
    gone, kept = store.transact(lambda tx: tx.insert_runs([run_row(t1, 1), run_row(t1, 2)]))
    store.transact(lambda tx: tx.insert_chunks([
        {"run_id": r, "seq": 1, "data": "x", "clear": False} for r in (gone, kept)]))
    store.transact(lambda tx: tx.delete_runs([gone]))
    assert [r["id"] for r in store.transact(lambda tx: tx.runs_of(t1, False))] == [kept]
    assert store.transact(lambda tx: tx.chunks([gone, kept])) == {
        gone: [], kept: [{"run_id": kept, "seq": 1, "data": "x", "clear": False}]}
    store.transact(lambda tx: tx.delete_runs([10**9]))  # no such run: nothing happens


# -- live output ----------------------------------------------------------------------------


def chunk(run_id, seq, data, clear=False):
    return {"run_id": run_id, "seq": seq, "data": data, "clear": clear}


def test_insert_chunks_is_idempotent_on_run_and_seq(store, task_ids):
    t1, t2 = task_ids
    r1, r2 = store.transact(lambda tx: tx.insert_runs([run_row(t1, 1), run_row(t2, 1)]))
    store.transact(lambda tx: tx.insert_chunks([chunk(r1, 2, "b"), chunk(r1, 1, "a")]))
    store.transact(lambda tx: tx.insert_chunks([
        chunk(r1, 1, "a again"), chunk(r1, 3, "c", clear=True), chunk(r2, 1, "other"),
        chunk(r1, 3, "c again")]))  # twice in one batch too
    store.transact(lambda tx: tx.insert_chunks([]))
    got = store.transact(lambda tx: tx.chunks([r1, r2, 10**9]))
    assert got == {
        r1: [chunk(r1, 1, "a"), chunk(r1, 2, "b"), chunk(r1, 3, "c", clear=True)],
        r2: [chunk(r2, 1, "other")], 10**9: []}
    assert store.transact(lambda tx: tx.chunks([])) == {}
    assert store.transact(lambda tx: tx.chunks(r for r in [r2])) == {r2: [chunk(r2, 1, "other")]}


def test_chunk_bytes_and_delete_chunks(store, task_ids):
    t1, t2 = task_ids
    r1, r2, r3 = store.transact(lambda tx: tx.insert_runs(
        [run_row(t1, 1), run_row(t2, 1), run_row(t2, 2)]))
    store.transact(lambda tx: tx.insert_chunks([
        chunk(r1, 1, "abc"), chunk(r1, 2, "de"), chunk(r2, 1, "x" * 100)]))
    assert store.transact(lambda tx: tx.chunk_bytes([r1, r2, r3])) == {r1: 5, r2: 100}
    assert store.transact(lambda tx: tx.chunk_bytes([])) == {}
    store.transact(lambda tx: tx.delete_chunks([r1, r3]))
    store.transact(lambda tx: tx.delete_chunks([]))
    assert store.transact(lambda tx: tx.chunk_bytes([r1, r2])) == {r2: 100}
    assert store.transact(lambda tx: tx.chunks([r1])) == {r1: []}
    assert [r["id"] for r in store.transact(lambda tx: tx.runs_of(t1, False))] == [r1]


def test_chunk_bytes_counts_bytes_of_multibyte_text(store, task_ids):
    t1, _ = task_ids
    run_id = store.transact(lambda tx: tx.insert_runs([run_row(t1, 1)]))[0]
    text = "é€😀"  # 2 + 3 + 4 bytes in UTF-8, 3 characters
    store.transact(lambda tx: tx.insert_chunks([chunk(run_id, 1, text)]))
    assert store.transact(lambda tx: tx.chunk_bytes([run_id])) == {run_id: len(text.encode())}
