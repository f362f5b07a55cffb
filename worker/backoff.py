"""Retry delays for calls to a coordinator that is away: jittered, exponential, capped.

Each worker thread that talks to the coordinator keeps its own `Backoff`, so
a failing heartbeat does not slow the reporter and vice versa. Jitter keeps
many workers from hammering a coordinator that just came back all at once.
"""

from __future__ import annotations

import random

DEFAULT_BACKOFF_BASE_S = 0.1
"""First retry delay."""
DEFAULT_BACKOFF_CAP_S = 5.0
"""Longest retry delay."""


class Backoff:
    """Delays base, 2*base, 4*base, ... up to the cap, each scaled by a random 0.5-1.0."""

    def __init__(
        self, base_s: float = DEFAULT_BACKOFF_BASE_S, cap_s: float = DEFAULT_BACKOFF_CAP_S
    ) -> None:
        self._base = base_s
        self._cap = cap_s
        self.failures = 0
        """Consecutive failures since the last success."""

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before retrying."""
        delay = min(self._cap, self._base * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.failures = 0
