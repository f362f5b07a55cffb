"""The cheaper per-run paths of the pool: message framing, output read before replies, timers.

`Channel` replaced multiprocessing's Connection between the pool and its children; the pool
now handles output events before replies and skips the second read of a pipe it emptied in
the same batch of events. These tests pin what must not change: every message arrives whole
and in order whatever the read boundaries, and every byte a run prints (Python, fd 1, a
subprocess) lands in that run and no other.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import textwrap
import threading
from collections.abc import Iterator

import pytest

from taskgrid.worker.capture import OutputBuffer, join_chunks
from taskgrid.worker.child import Channel
from taskgrid.worker.records import Outcome, RunResult, TaskRun
from taskgrid.worker.runner import Pool


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel]]:
    a, b = socket.socketpair()
    left, right = Channel(a), Channel(b)
    yield left, right
    left.close()
    right.close()


def test_messages_arrive_whole_and_in_order(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    sent = [("run", i, "x" * i) for i in range(50)]
    for message in sent:
        left.send(message)
    assert [right.recv() for _ in sent] == sent


def test_receive_ready_returns_every_complete_message_and_never_waits(
    pair: tuple[Channel, Channel],
) -> None:
    left, right = pair
    assert right.receive_ready() == []
    left.send(("done", "COMPLETED", "1", ""))
    left.send(("done", "FAILED", None, "tb"))
    assert right.receive_ready() == [("done", "COMPLETED", "1", ""), ("done", "FAILED", None, "tb")]
    assert right.receive_ready() == []


def test_a_message_split_across_reads_waits_for_its_rest(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    body = pickle.dumps(("run", 7, "payload"))
    frame = struct.pack("!I", len(body)) + body
    for cut in (2, 4, len(frame) - 1):
        left.sock.sendall(frame[:cut])
        assert right.receive_ready() == []
        left.sock.sendall(frame[cut:])
        assert right.receive_ready() == [("run", 7, "payload")]


def test_big_messages_cross_in_both_directions(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    big = ("run", 1, "y" * 3_000_000)
    sender = threading.Thread(target=left.send, args=(big,))
    sender.start()
    assert right.recv() == big  # blocking side: many reads
    sender.join()
    sender = threading.Thread(target=right.send, args=(big,))
    sender.start()
    got: list[object] = []
    while not got:  # non-blocking side: gathers the pieces across calls
        got = left.receive_ready()
    sender.join()
    assert got == [big]


def test_end_of_file_comes_after_the_last_messages(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    left.send(("done", "COMPLETED", "1", ""))
    left.sock.close()
    assert right.receive_ready() == [("done", "COMPLETED", "1", "")]
    with pytest.raises(EOFError):
        right.receive_ready()
    with pytest.raises(EOFError):
        right.recv()


def test_output_buffer_without_output_takes_nothing() -> None:
    buffer = OutputBuffer()
    assert buffer.take(final=True) == []
    buffer.feed("é".encode()[:1])  # half a character: completed (replaced) only at the end
    assert join_chunks(buffer.take(final=True)) == "\ufffd"


TASKS = """
import os, sys

def mixed(i):
    print("py", i)
    os.write(1, b"fd %d\\n" % i)
    sys.stderr.write("err %d\\n" % i)
    if i % 10 == 1:
        os.system("echo sub %d" % i)
    return i

def quiet(i):
    return i
"""


@pytest.mark.parametrize("size", [1, 3])
def test_each_run_gets_exactly_its_own_output(tmp_path: os.PathLike[str], size: int) -> None:
    path = os.path.join(str(tmp_path), "overhead_tasks.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(TASKS))
    results: dict[int, RunResult] = {}
    done = threading.Condition()
    total = 300
    pool: Pool | None = None
    submitted = 0

    def submit_next() -> None:
        nonlocal submitted
        with done:
            if submitted >= total:
                return
            submitted += 1
            i = submitted
        assert pool is not None
        name = "mixed" if i % 2 else "quiet"
        pool.submit(TaskRun(i, 1, i, f"u{i}", name, f"[{i}]"))

    def on_finish(result: RunResult) -> None:
        with done:
            results[result.task.task_id] = result
            done.notify_all()
        submit_next()  # back to back, from the I/O thread: the tightest schedule

    pool = Pool(path, size, on_finish, kill_grace_s=1.0)
    pool.start()
    try:
        for _ in range(size):
            submit_next()
        with done:
            assert done.wait_for(lambda: len(results) == total, timeout=60)
    finally:
        pool.close()
    for i, result in results.items():
        assert result.outcome is Outcome.COMPLETED, result.traceback
        assert result.result == str(i)
        text = join_chunks(result.output)
        if i % 2 == 0:
            assert text == ""
            continue
        lines = sorted(text.splitlines())
        expected = [f"py {i}", f"fd {i}", f"err {i}"] + ([f"sub {i}"] if i % 10 == 1 else [])
        assert lines == sorted(expected)
