"""Waiting on conditions: the only way tests synchronise with other processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 0.01


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    desc: str = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` until it returns something truthy, and return that value.

    Args:
        predicate: checked at once, then every `interval` seconds.
        timeout: seconds to keep checking before giving up.
        interval: seconds between two checks.
        desc: what is awaited, for the failure message.
        ignore: exception types that count as "not yet" (e.g. grpc.RpcError while a server
            restarts); the last one is reported on timeout. Anything else propagates at once.

    Raises:
        AssertionError: on timeout, naming `desc` and the predicate's last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore as exc:
            value = exc  # type: ignore[assignment]
            ok = False
        else:
            ok = bool(value)
        if ok:
            return value
        if time.monotonic() >= deadline:
            what = desc or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what}; last value: {value!r}"
            )
        # This sleep only paces the polling: the condition itself is re-checked after it, so
        # it never stands in for the thing awaited (a short interval just wastes a little CPU).
        time.sleep(interval)
