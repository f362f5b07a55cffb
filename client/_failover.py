"""`Failover`: one channel to the current coordinator address, moved on when it is away.

Shared by the client's `Scheduler` and the Python worker's agent: every
thread of one client or worker calls through one `Failover`, which keeps one
channel to the current address of an `AddressBook` (``_addresses``), rotates
to the next address when a call finds its coordinator away (one step
however many threads see the failure at once), resolves DNS names again
after a full round, and sends a call again on the new address (`call`) or
restarts a stream there (`stream`), each address at most once per call
(docs/connecting.md). `is_unavailable` and `is_unsent` tell which gRPC
failures mean the coordinator is away and which never reached one. Opening
a channel is the caller's ``connect`` (``_channel.create_channel`` for the
client, ``taskgrid.worker.channel.open_channel`` for the worker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from ._addresses import Address, AddressBook

logger = logging.getLogger(__name__)

#: Words of gRPC's details when a call failed before it reached any server.
_UNSENT_DETAILS = ("failed to connect", "connection refused", "dns resolution failed")

S = TypeVar("S")
R = TypeVar("R")


def is_unavailable(error: grpc.RpcError) -> bool:
    """UNAVAILABLE: the coordinator is away (gRPC also says so when it cannot connect)."""
    return bool(error.code() == grpc.StatusCode.UNAVAILABLE)


def is_unsent(error: grpc.RpcError) -> bool:
    """True when the call failed before its request reached a server (no connection).

    Such a call was applied nowhere, so even a non-idempotent one may be sent
    elsewhere. Told from gRPC's details: "failed to connect to all
    addresses", "Connection refused", "DNS resolution failed".
    """
    if not is_unavailable(error):
        return False
    details = error.details()
    return any(words in str(details or "").lower() for words in _UNSENT_DETAILS)


def _always(error: grpc.RpcError) -> bool:
    return True


class Failover(Generic[S]):
    """One channel to the current address of an `AddressBook`, moved on when it is away.

    `S` is what callers call through (a stub, or a bundle of stubs); `connect`
    opens a channel to an address and makes it. Every thread of a client or
    worker shares one Failover: a call takes `current()`, and when it finds
    the coordinator away it asks `rotate(failed)`, which moves only if
    `failed` is still the current one, so that threads failing at once move
    one step, not one step each. A move closes the old channel (cancelling
    calls still on it: `call` sends those again on the new one) and opens the
    next. After every address has failed in a row, DNS names are resolved
    again. With a single address the channel is kept: gRPC reconnects it.
    """

    def __init__(
        self,
        book: AddressBook,
        connect: Callable[[Address], tuple[Any, S]],
        log: logging.Logger = logger,
    ) -> None:
        """Nothing is opened yet: the first `current()` opens the first address."""
        self.book = book
        self._connect = connect
        self._log = log
        self._lock = threading.Lock()
        self._index = 0  # position in the book of the address tried last
        self._address: Address | None = None  # where the current channel goes
        self._misses = 0  # failures that moved on since a coordinator last answered
        self._channel: Any = None
        self._current: S | None = None
        self._closed = False

    def current(self) -> S:
        """What to call through now (the channel to the current address is opened if need be)."""
        with self._lock:
            if self._current is None:
                self._log.debug("coordinator addresses: %s",
                                ", ".join(map(str, self.book.addresses)))  # fmt: skip
                self._address = self.book.addresses[self._index]
                self._channel, self._current = self._connect(self._address)
            return self._current

    @property
    def address(self) -> Address:
        """The current address."""
        with self._lock:
            return self._address or self.book.addresses[self._index]

    @property
    def size(self) -> int:
        """How many addresses there are (a call tries each at most once)."""
        with self._lock:
            return len(self.book.addresses)

    def replace(self, current: S) -> None:
        """Call through `current` at the current address from now on (tests put fakes in)."""
        with self._lock:
            self._address = self._address or self.book.addresses[self._index]
            self._current = current

    def is_moved_from(self, stale: S) -> bool:
        """True when another call moved on from `stale` (its channel is closed or closing)."""
        with self._lock:
            return stale is not self._current and not self._closed

    def rotate(self, failed: S, why: str) -> bool:
        """`failed` found its coordinator away: move to the next address; True if it moved.

        Nothing moves when another call has moved on from `failed` already,
        or when the next address is the same one (a single address).
        """
        with self._lock:
            if failed is not self._current or self._closed:
                return False
            addresses = self.book.addresses
            before = self._address
            index = (self._index + 1) % len(addresses)
            self._misses += 1
            if self._misses >= len(addresses):
                # a full round failed: look the names up again (under the lock: the other
                # calls would only find the same coordinators away meanwhile)
                self._misses = 0
                if self.book.refresh():
                    addresses, index = self.book.addresses, 0
            after = addresses[index]
            self._index = index
            if after == before:
                return False
            try:
                channel, current = self._connect(after)
            except ValueError as error:  # an unusable address: stay on the channel we have
                self._log.error("cannot open a channel to coordinator %s: %s", after, error)
                return False
            stale, self._channel, self._current = self._channel, channel, current
            self._address = after
        self._log.info("coordinator %s away (%s): moving to %s", before, why, after)
        if stale is not None:
            stale.close()
        return True

    def answered(self) -> None:
        """A coordinator answered: the next failure starts a new round."""
        if self._misses:
            with self._lock:
                self._misses = 0

    def close(self) -> None:
        """Close the current channel; calls still on it end CANCELLED."""
        with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def call(
        self,
        send: Callable[[S], R],
        moves_on: Callable[[grpc.RpcError], bool] = is_unavailable,
        resend: Callable[[grpc.RpcError], bool] = _always,
    ) -> R:
        """``send(current())``; after a failure `moves_on` accepts, move on and send again.

        Each address is tried at most once: the last error is raised when every
        one failed in a row (the caller backs off, if it retries at all). A call
        whose failure `resend` refuses (it may have been applied) moves on but
        is not sent again. A call cut off because another one moved on (its
        channel closed under it) is sent again at once, without counting.
        """
        attempts = _Attempts(self, moves_on, resend)
        while True:
            current = self.current()
            try:
                result = send(current)
            except (grpc.RpcError, ValueError) as error:
                if attempts.again(current, error):
                    continue
                raise
            self.answered()
            return result

    def stream(
        self,
        start: Callable[[S], Any],
        restarted: Callable[[], None],
        moves_on: Callable[[grpc.RpcError], bool] = is_unavailable,
    ) -> Iterator[Any]:
        """The messages of ``start(current())``, a stream restarted on the next address.

        When the stream fails in a way `moves_on` accepts (or is cut off by a
        call that moved on), it is started again through the new current
        address and `restarted()` is called before its first message, so the
        consumer can skip what it has seen. Each address is tried at most
        once in a row; a stream that delivered a message starts a new round.
        Closing the iterator cancels the stream.
        """
        attempts = _Attempts(self, moves_on, _always)
        while True:
            current = self.current()
            try:
                stream = start(current)
                try:
                    for message in stream:
                        attempts.reset()
                        yield message
                    return
                finally:
                    stream.cancel()
            except (grpc.RpcError, ValueError) as error:
                if not attempts.again(current, error):
                    raise
            self._log.debug("stream restarted on %s", self.address)
            restarted()


class _Attempts:
    """The attempts of one call through a `Failover`: whether a failure is worth another."""

    def __init__(
        self,
        failover: Failover[Any],
        moves_on: Callable[[grpc.RpcError], bool],
        resend: Callable[[grpc.RpcError], bool],
    ) -> None:
        self._failover = failover
        self._moves_on = moves_on
        self._resend = resend
        self._failures = 0  # addresses found away by this call
        self._cut_off = 0  # attempts cancelled by another call's move

    def reset(self) -> None:
        """A coordinator answered (a stream's message): a new round starts."""
        self._failures = self._cut_off = 0
        self._failover.answered()

    def again(self, current: Any, error: BaseException) -> bool:
        """After `error` from an attempt through `current`: True to try again (moved on)."""
        failover = self._failover
        cancelled = isinstance(error, ValueError) or (  # ValueError: "closed channel"
            isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.CANCELLED)
        if cancelled and self._cut_off < failover.size and failover.is_moved_from(current):
            self._cut_off += 1
            return True
        if not isinstance(error, grpc.RpcError):
            return False
        if not self._moves_on(error):
            if error.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                failover.answered()  # an answer, if not the one hoped for
            return False
        failover.rotate(current, error.code().name)
        self._failures += 1
        return self._failures < failover.size and self._resend(error)
