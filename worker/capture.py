"""Captured output of task runs: fd-level redirection and `!clear!` chunking.

Two halves that meet at a pipe:

- `FdRedirect` runs inside the task child. Around each run it points file
  descriptors 1 and 2 at the child's output pipe (``dup2``), so prints from
  Python, C extensions and subprocesses are all captured, then restores them.
- `OutputBuffer` runs in the worker process. It decodes the bytes read from
  the pipe, applies web2py's `!clear!` rule (only text after the LAST marker
  survives, even when a marker is split across two reads) and cuts what is
  pending into numbered chunks (seq 1, 2, 3... per run; a chunk carrying the
  effect of a marker has ``clear=True``).

Nothing here knows about gRPC or child processes, so it is unit-tested directly.
"""

from __future__ import annotations

import codecs
import os
import sys
import threading
from dataclasses import dataclass
from types import TracebackType

CLEAR_MARKER = "!clear!"
"""A task prints this to discard everything it printed before (web2py)."""

DEFAULT_MAX_CHUNK_CHARS = 256 * 1024
"""Longest `Chunk.data`; keeps one chunk well under gRPC's 4 MB message limit."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One numbered slice of a run's output, as sent in an OutputChunk message."""

    seq: int
    """1 for the first chunk of a run, then +1 per chunk."""
    data: str
    """The text of this slice."""
    clear: bool = False
    """True when everything before this chunk must be discarded."""


def text_after_last_marker(text: str) -> str | None:
    """Return the text after the last `!clear!` in `text`, or None if it has none."""
    index = text.rfind(CLEAR_MARKER)
    if index < 0:
        return None
    return text[index + len(CLEAR_MARKER) :]


def partial_marker_length(text: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of the marker.

    Such a suffix may become a marker once the next read arrives, so a live
    chunk holds it back instead of showing a stray ``!cle`` to followers.
    """
    for length in range(min(len(CLEAR_MARKER) - 1, len(text)), 0, -1):
        if text.endswith(CLEAR_MARKER[:length]):
            return length
    return 0


def split_text(text: str, max_chars: int) -> list[str]:
    """Cut `text` into pieces of at most `max_chars` characters (at least one piece)."""
    if len(text) <= max_chars:
        return [text]
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]


class OutputBuffer:
    """The not-yet-sent output of one run, with its chunk numbering.

    Fed by the pool's I/O thread and drained by the agent's output flusher,
    hence the lock. Equivalent to keeping the whole stream and applying
    ``rfind("!clear!")`` to it, but in O(new text) per feed: only the last
    ``len(marker) - 1`` characters seen are kept to catch a marker split
    across two reads.
    """

    def __init__(self, max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS) -> None:
        self._lock = threading.Lock()
        self._decoder: codecs.IncrementalDecoder | None = None  # made by the first feed
        self._parts: list[str] = []
        self._pending_chars = 0
        self._clear = False
        self._tail = ""
        self._next_seq = 1
        self._max_chunk_chars = max_chunk_chars

    @property
    def next_seq(self) -> int:
        """The seq the next chunk will carry."""
        return self._next_seq

    def has_pending(self) -> bool:
        """True when a call to `take` would return at least one chunk."""
        with self._lock:
            return self._pending_chars > 0 or self._clear

    def feed(self, data: bytes) -> None:
        """Add raw bytes read from the run's output pipe (UTF-8, invalid bytes replaced)."""
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = _new_decoder()
        text = decoder.decode(data)
        if text:
            self.feed_text(text)

    def feed_text(self, text: str) -> None:
        """Add decoded text, applying the `!clear!` rule across feed boundaries."""
        if not text:
            return
        with self._lock:
            probe = self._tail + text
            rest = text_after_last_marker(probe)
            if rest is None:
                self._parts.append(text)
                self._pending_chars += len(text)
            else:
                self._parts = [rest] if rest else []
                self._pending_chars = len(rest)
                self._clear = True
            self._tail = probe[-(len(CLEAR_MARKER) - 1) :]

    def take(self, final: bool = False) -> list[Chunk]:
        """Return the pending output as chunks and forget it.

        Args:
            final: the run has ended; flush the decoder and everything pending,
                including a trailing partial marker that can no longer complete.

        Returns:
            Zero or more chunks with consecutive seq numbers; the first carries
            ``clear=True`` when a marker was seen since the previous take.
        """
        with self._lock:
            if final and self._decoder is not None:
                tail_text = self._decoder.decode(b"", final=True)
                if tail_text:
                    self._parts.append(tail_text)
                    self._pending_chars += len(tail_text)
            if not self._pending_chars and not self._clear:
                return []
            text = "".join(self._parts)
            held = "" if final else text[len(text) - partial_marker_length(text) :]
            if held:
                text = text[: -len(held)]
                if not text and not self._clear:
                    return []
            self._parts = [held] if held else []
            self._pending_chars = len(held)
            chunks = []
            for index, piece in enumerate(split_text(text, self._max_chunk_chars)):
                chunks.append(Chunk(self._next_seq, piece, self._clear and index == 0))
                self._next_seq += 1
            self._clear = False
            return chunks


def _new_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def join_chunks(chunks: list[Chunk]) -> str:
    """Apply chunks in order as the coordinator does: a clear chunk drops what came before."""
    parts: list[str] = []
    for chunk in chunks:
        if chunk.clear:
            parts = []
        parts.append(chunk.data)
    return "".join(parts)


class FdRedirect:
    """Points fds 1 and 2 at `target_fd` for the duration of a ``with`` block.

    Created once per child process: the original fds 1 and 2 are duplicated
    once and restored after each run, so a run costs four ``dup2`` calls and
    two flushes. Python's buffered ``sys.stdout``/``sys.stderr`` are flushed on
    both edges so that text printed before the run is not captured into it
    and text printed during the run is not left behind for the next.
    """

    def __init__(self, target_fd: int) -> None:
        self._target_fd = target_fd
        self._saved = (os.dup(1), os.dup(2))
        for fd in self._saved:
            os.set_inheritable(fd, False)

    def __enter__(self) -> FdRedirect:
        _flush_std_streams()
        os.dup2(self._target_fd, 1)
        os.dup2(self._target_fd, 2)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _flush_std_streams()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)

    def close(self) -> None:
        """Release the saved copies of the original fds."""
        for fd in self._saved:
            os.close(fd)


def _flush_std_streams() -> None:
    """Flush sys.stdout/sys.stderr, ignoring streams a task closed or replaced badly."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
