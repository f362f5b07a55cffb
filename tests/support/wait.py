"""Waiting on conditions: the only way tests synchronise with other processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
#: the first pause between checks; each next one is 1.5 times longer, up to MAX_INTERVAL_S
DEFAULT_INTERVAL_S = 0.01
#: most checks are RPCs to a coordinator sharing the 2 cores with the test: a wait of
#: seconds polls at 20 Hz, not 100 Hz, while a short one still answers within 10-20 ms
MAX_INTERVAL_S = 0.05


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float | None = None,
    desc: str = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` until it returns something truthy, and return that value.

    Args:
        predicate: checked at once, then every `interval` seconds.
        timeout: seconds to keep checking before giving up.
        interval: seconds between two checks; by default 0.01 s at first, growing to 0.05 s.
        desc: what is awaited, for the failure message.
        ignore: exception types that count as "not yet" (e.g. grpc.RpcError while a server
            restarts); the last one is reported on timeout. Anything else propagates at once.

    Raises:
        AssertionError: on timeout, naming `desc` and the predicate's last value.
    """
    deadline = time.monotonic() + timeout
    pause = DEFAULT_INTERVAL_S if interval is None else interval
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
        time.sleep(pause)
        if interval is None:
            pause = min(MAX_INTERVAL_S, pause * 1.5)
