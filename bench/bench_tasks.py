"""Trivial tasks for bench/throughput.py."""

from __future__ import annotations


def noop(i: int) -> int:
    """Return the argument: the cheapest task with a result worth keeping."""
    return i
