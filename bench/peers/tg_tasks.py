"""taskgrid's side of bench/compare.py's workload (loaded with `taskgrid worker --tasks`)."""

from __future__ import annotations

import socket
import time

_udp: socket.socket | None = None


def noop(i: int) -> None:
    """Do nothing: the task's COMPLETED status is taskgrid's record that it ran."""
    return None


def lat(i: int, port: int) -> None:
    """Send this task's start time (time.time()) to the bench on loopback, first thing."""
    started = time.time()
    global _udp
    if _udp is None:
        _udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _udp.sendto(f"{i} {started!r}".encode(), ("127.0.0.1", port))


def add(i: int, j: int) -> int:
    """The round-trip phase's task: the client waits for its result (stored with the run)."""
    return i + j


tasks = {"noop": noop, "lat": lat, "add": add}
