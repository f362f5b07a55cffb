"""Output capture: `!clear!` across reads, chunk numbering, fd-level redirection."""

from __future__ import annotations

import io
import os
import random
import sys

import pytest

from taskgrid.worker.capture import (
    CLEAR_MARKER,
    Chunk,
    FdRedirect,
    OutputBuffer,
    join_chunks,
    partial_marker_length,
    split_text,
    text_after_last_marker,
)


def final_text(stream: str) -> str:
    """web2py's rule on the whole stream: only the text after the last marker survives."""
    rest = text_after_last_marker(stream)
    return stream if rest is None else rest


def test_text_after_last_marker():
    assert text_after_last_marker("no marker") is None
    assert text_after_last_marker("a!clear!b") == "b"
    assert text_after_last_marker("a!clear!b!clear!c") == "c"
    assert text_after_last_marker("a!clear!") == ""


@pytest.mark.parametrize(
    ("text", "length"),
    [("", 0), ("abc", 0), ("abc!", 1), ("x!cl", 3), ("x!clear", 6), ("x!clear!", 1), ("!", 1)],
)
def test_partial_marker_length(text, length):
    assert partial_marker_length(text) == length


def test_split_text_keeps_everything():
    assert split_text("", 3) == [""]
    assert split_text("abcdefg", 3) == ["abc", "def", "g"]


def test_chunks_are_numbered_from_one_per_run():
    buffer = OutputBuffer()
    assert buffer.take() == []
    buffer.feed(b"hello\n")
    assert buffer.take() == [Chunk(1, "hello\n", False)]
    buffer.feed(b"world\n")
    buffer.feed(b"again\n")
    assert buffer.take() == [Chunk(2, "world\nagain\n", False)]
    assert buffer.take(final=True) == []
    assert buffer.next_seq == 3


def test_clear_drops_earlier_text_and_flags_the_chunk():
    buffer = OutputBuffer()
    buffer.feed(b"50%\n")
    first = buffer.take()
    buffer.feed(b"!clear!100%\n")
    second = buffer.take(final=True)
    assert second == [Chunk(2, "100%\n", True)]
    assert join_chunks(first + second) == "100%\n"


def test_several_markers_keep_only_text_after_the_last():
    """semantics.md 10.2: prints "a", "!clear!b", "c!clear!d" -> final output "d\\n"."""
    buffer = OutputBuffer()
    chunks = []
    for line in (b"a\n", b"!clear!b\n", b"c!clear!d\n"):
        buffer.feed(line)
        chunks += buffer.take()
    chunks += buffer.take(final=True)
    assert join_chunks(chunks) == "d\n"
    assert [chunk.seq for chunk in chunks] == list(range(1, len(chunks) + 1))


def test_marker_split_across_two_reads_is_seen():
    buffer = OutputBuffer()
    buffer.feed(b"old text !cl")
    live = buffer.take()
    assert live == [Chunk(1, "old text ", False)]  # the possible marker start is held back
    buffer.feed(b"ear!new")
    chunks = live + buffer.take(final=True)
    assert chunks[-1] == Chunk(2, "new", True)
    assert join_chunks(chunks) == "new"


def test_held_back_prefix_is_released_when_it_is_not_a_marker():
    buffer = OutputBuffer()
    buffer.feed(b"price !cl")
    live = buffer.take()
    buffer.feed(b"ick")
    assert join_chunks(live + buffer.take()) == "price !click"


def test_trailing_partial_marker_is_flushed_at_the_end():
    buffer = OutputBuffer()
    buffer.feed(b"end !cle")
    assert buffer.take(final=True) == [Chunk(1, "end !cle", False)]


def test_marker_with_nothing_after_it_still_sends_a_clear_chunk():
    buffer = OutputBuffer()
    buffer.feed(b"progress")
    first = buffer.take()
    buffer.feed(CLEAR_MARKER.encode())
    assert buffer.has_pending()
    second = buffer.take()
    assert second == [Chunk(2, "", True)]
    assert join_chunks(first + second) == ""


def test_multibyte_character_split_across_reads():
    data = "héllo ✓\n".encode()
    buffer = OutputBuffer()
    for i in range(len(data)):
        buffer.feed(data[i : i + 1])
    assert join_chunks(buffer.take(final=True)) == "héllo ✓\n"


def test_invalid_utf8_is_replaced_not_fatal():
    buffer = OutputBuffer()
    buffer.feed(b"ok \xff\xfe end")
    assert join_chunks(buffer.take(final=True)) == "ok \ufffd\ufffd end"


def test_large_output_is_cut_into_consecutive_chunks():
    buffer = OutputBuffer(max_chunk_chars=1000)
    buffer.feed(b"x" * 2500)
    chunks = buffer.take(final=True)
    assert [len(chunk.data) for chunk in chunks] == [1000, 1000, 500]
    assert [chunk.seq for chunk in chunks] == [1, 2, 3]


def test_large_output_after_a_marker_flags_only_the_first_piece():
    buffer = OutputBuffer(max_chunk_chars=4)
    buffer.feed(b"junk!clear!abcdefghij")
    chunks = buffer.take(final=True)
    assert [chunk.clear for chunk in chunks] == [True, False, False]
    assert join_chunks(chunks) == "abcdefghij"


@pytest.mark.parametrize("seed", range(30))
def test_any_split_and_take_schedule_matches_the_whole_stream_rule(seed):
    rng = random.Random(seed)
    pieces = ["a", "b\n", "!", "clear", "!c", "lear!", "!clear!", "xy", "!cle", "ar", "é", "!!"]
    stream = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
    data = stream.encode()
    buffer = OutputBuffer(max_chunk_chars=rng.randint(1, 8))
    chunks: list[Chunk] = []
    position = 0
    while position < len(data):
        step = rng.randint(1, 6)
        buffer.feed(data[position : position + step])
        position += step
        if rng.random() < 0.4:
            chunks += buffer.take()
    chunks += buffer.take(final=True)
    assert join_chunks(chunks) == final_text(stream)
    assert [chunk.seq for chunk in chunks] == list(range(1, len(chunks) + 1))


def fd_stream(fd: int) -> io.TextIOWrapper:
    """A buffered text stream on `fd` itself, as sys.stdout is in a task child."""
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), write_through=False)


def test_fd_redirect_captures_python_c_level_and_subprocess_output(tmp_path, monkeypatch):
    # pytest swaps sys.stdout for an in-memory capture; a child has real fd-backed streams.
    monkeypatch.setattr(sys, "stdout", fd_stream(1))
    monkeypatch.setattr(sys, "stderr", fd_stream(2))
    target = tmp_path / "out.txt"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    redirect = FdRedirect(fd)
    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    try:
        with redirect:
            print("from print")  # stays buffered until the redirect flushes it
            sys.stderr.write("from stderr\n")
            os.write(1, b"from fd 1\n")
            os.system("echo from subprocess")
        after = os.fstat(1).st_ino, os.fstat(2).st_ino
    finally:
        redirect.close()
        os.close(fd)
    assert after == before  # fds 1 and 2 are restored
    text = target.read_text()
    for line in ("from print", "from stderr", "from fd 1", "from subprocess"):
        assert line + "\n" in text
