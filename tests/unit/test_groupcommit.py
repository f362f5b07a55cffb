"""Group commit: bodies queued together share a transaction, yet fail alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from taskgrid.coordinator.groupcommit import LINGER_S, MAX_BATCH, Crowd, GroupCommit


class FakeStore:
    """Runs a batch as the store does: all in one 'transaction', or each alone on a failure."""

    def __init__(self) -> None:
        self.transactions: list[list[Any]] = []
        self.gate = threading.Event()
        self.gate.set()

    def run_batch(self, bodies: Sequence[Any]) -> list[tuple[bool, Any]]:
        self.gate.wait(5)
        try:
            results = [body(None) for body in bodies]
            self.transactions.append(list(bodies))
            return [(True, r) for r in results]
        except Exception:  # noqa: BLE001 - rerun each alone, as the store does
            pass
        out: list[tuple[bool, Any]] = []
        for body in bodies:
            try:
                out.append((True, body(None)))
                self.transactions.append([body])
            except Exception as exc:
                out.append((False, exc))
        return out


def test_queued_bodies_share_one_transaction_and_failures_stay_their_own() -> None:
    store = FakeStore()
    writer = GroupCommit(store.run_batch, threads=1)

    def boom(_: Any) -> Any:
        raise ValueError("poisoned body")

    async def main() -> list[Any]:
        store.gate.clear()  # hold the thread on a first body while the rest queue up
        first = writer.submit(lambda _: "first")
        await asyncio.sleep(0)
        queued = [writer.submit(lambda _, i=i: i) for i in range(10)]
        bad = writer.submit(boom)
        store.gate.set()
        results = await asyncio.gather(first, *queued, bad, return_exceptions=True)
        return results

    try:
        results = asyncio.run(main())
    finally:
        writer.close()
    assert results[:11] == ["first", *range(10)]
    assert isinstance(results[11], ValueError)
    # the ten good bodies committed, and the poisoned one did not take them down
    assert writer.bodies == 12 and writer.batches <= 3
    assert sum(len(t) for t in store.transactions) == 11


def test_a_batch_is_bounded_and_a_cancelled_body_is_skipped() -> None:
    store = FakeStore()
    writer = GroupCommit(store.run_batch, threads=1)
    ran: list[int] = []

    async def main() -> None:
        store.gate.clear()
        hold = writer.submit(lambda _: None)
        await asyncio.sleep(0)
        futures = [writer.submit(lambda _, i=i: ran.append(i)) for i in range(MAX_BATCH + 5)]
        futures[3].cancel()
        store.gate.set()
        await hold
        await asyncio.gather(*[f for i, f in enumerate(futures) if i != 3])

    try:
        asyncio.run(main())
    finally:
        writer.close()
    assert 3 not in ran and len(ran) == MAX_BATCH + 4
    assert max(len(t) for t in store.transactions) <= MAX_BATCH


def test_submit_after_close_is_refused() -> None:
    writer = GroupCommit(FakeStore().run_batch, threads=1)
    writer.close()

    async def main() -> None:
        writer.submit(lambda _: None)

    with pytest.raises(RuntimeError):
        asyncio.run(main())


def test_inline_bodies_queued_in_one_loop_iteration_share_a_transaction() -> None:
    store = FakeStore()
    writer = GroupCommit(store.run_batch, threads=0)
    loop_thread: list[int] = []

    def boom(_: Any) -> Any:
        raise ValueError("poisoned body")

    async def main() -> list[Any]:
        loop_thread.append(threading.get_ident())
        futures = [writer.submit(lambda _, i=i: (i, threading.get_ident())) for i in range(10)]
        futures.append(writer.submit(boom))
        futures[2].cancel()
        assert not store.transactions  # nothing runs until the loop turns
        return await asyncio.gather(*futures, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        writer.close()
    good = [r for i, r in enumerate(results[:10]) if i != 2]
    assert [i for i, _ in good] == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert {t for _, t in good} == set(loop_thread)  # run on the loop's own thread
    assert isinstance(results[2], asyncio.CancelledError)
    assert isinstance(results[10], ValueError)
    # one shared try (rolled back by the poisoned body), then each body alone
    assert writer.bodies == 10 and writer.batches == 1
    assert sum(len(t) for t in store.transactions) == 9


def test_inline_close_from_another_thread_waits_for_the_loop_to_drain() -> None:
    store = FakeStore()
    writer = GroupCommit(store.run_batch, threads=0)
    closed = threading.Event()

    async def main() -> list[Any]:
        futures = [writer.submit(lambda _, i=i: i) for i in range(5)]
        closer = threading.Thread(target=lambda: (writer.close(), closed.set()))
        closer.start()
        results = await asyncio.gather(*futures)
        await asyncio.get_running_loop().run_in_executor(None, closer.join, 5)
        return results

    assert asyncio.run(main()) == list(range(5))
    assert closed.is_set() and writer.bodies == 5


def test_inline_a_lingering_body_waits_for_company_unless_an_eager_one_comes() -> None:
    store = FakeStore()
    writer = GroupCommit(store.run_batch, threads=0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        alone = writer.submit(lambda _: "alone", linger_s=0.05)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not alone.done()  # still lingering after several loop turns
        assert await alone == "alone" and loop.time() - t0 >= 0.04
        first = writer.submit(lambda _: "lingered", linger_s=30.0)
        second = writer.submit(lambda _: "eager")  # drains both at once, long before 30 s
        assert await asyncio.wait_for(asyncio.gather(first, second), 5) == ["lingered", "eager"]

    try:
        asyncio.run(main())
    finally:
        writer.close()
    assert [len(t) for t in store.transactions] == [1, 2]


def test_store_threads_ignore_linger() -> None:
    writer = GroupCommit(FakeStore().run_batch, threads=1)

    async def main() -> Any:
        return await asyncio.wait_for(writer.submit(lambda _: "done", linger_s=30.0), 5)

    try:
        assert asyncio.run(main()) == "done"
    finally:
        writer.close()


def test_a_crowd_lingers_and_a_lone_caller_does_not() -> None:
    now = [100.0]
    crowd = Crowd(gap_s=0.0005, peer_gap_s=0.002, clock=lambda: now[0])
    assert crowd.arrive("ipv4:a") == 0.0  # the first caller
    now[0] += 0.001
    assert crowd.arrive("ipv4:a") == 0.0  # the same connection, a round trip later
    now[0] += 0.0002
    assert crowd.arrive("ipv4:a") == LINGER_S  # closer than any round trip
    now[0] += 0.001
    assert crowd.arrive("ipv4:b") == LINGER_S  # another connection just after
    now[0] += 0.01
    assert crowd.arrive("ipv4:c") == 0.0  # long after: alone again
    assert crowd.joining() == 0.0
    with crowd.waiting():
        now[0] += 1.0
        assert crowd.arrive("ipv4:c") == LINGER_S  # someone waits for a commit
        assert crowd.joining() == LINGER_S
    assert crowd.joining() == 0.0
