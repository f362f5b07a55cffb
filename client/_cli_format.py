"""Text and JSON renderings of client records for the ``taskgrid`` command line.

Pure functions from records to strings or JSON-ready values; no I/O, no
Scheduler calls, so the command module stays about commands and these stay
easy to test.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from .records import CommandSpec, RunRecord, TaskRecord, WorkerRecord

#: Shown for a missing value in human output.
MISSING = "-"
#: Widest a table cell may grow before it is cut.
DEFAULT_MAX_CELL = 40


def to_jsonable(value: Any) -> Any:
    """Turn records (and what they hold) into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def dumps(document: Any) -> str:
    """One JSON document, as printed by ``--json``."""
    return json.dumps(to_jsonable(document), indent=2, sort_keys=False)


def format_value(value: Any) -> str:
    """One value for a ``key: value`` line."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) or MISSING
    return str(value)


def key_values(pairs: Iterable[tuple[str, Any]], indent: str = "") -> list[str]:
    """Aligned ``key: value`` lines."""
    items = list(pairs)
    width = max((len(k) for k, _ in items), default=0)
    return [f"{indent}{k + ':':<{width + 1}} {format_value(v)}" for k, v in items]


def command_line(command: CommandSpec) -> str:
    """A command task's program as a shell would read it, e.g. ``/bin/sh -c 'echo hi'``."""
    return shlex.join(command.argv)


def task_lines(task: TaskRecord) -> list[str]:
    """Every field of a task, one per line; a command task's program as a command line.

    A command's env and cwd get lines of their own (``command env``,
    ``command cwd``) when set.
    """
    pairs: list[tuple[str, Any]] = []
    for f in dataclasses.fields(task):
        value = getattr(task, f.name)
        if f.name != "command":
            pairs.append((f.name, value))
            continue
        if value is None:
            pairs.append(("command", None))
            continue
        pairs.append(("command", command_line(value)))
        if value.env:
            env = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(value.env.items()))
            pairs.append(("command env", env))
        if value.cwd:
            pairs.append(("command cwd", value.cwd))
    return key_values(pairs)


def run_lines(run: RunRecord, with_output: bool) -> list[str]:
    """A run's summary, and with ``with_output`` its output and traceback."""
    lines = key_values(
        [
            ("id", run.id),
            ("attempt", run.attempt),
            ("status", run.status),
            ("worker_name", run.worker_name or None),
            ("start_time", run.start_time),
            ("stop_time", run.stop_time),
            ("result", run.run_result),
        ],
        indent="  ",
    )
    if with_output:
        lines += _block("output", run.run_output) + _block("traceback", run.traceback)
    return lines


def _block(title: str, text: str) -> list[str]:
    if not text:
        return []
    return [f"  {title}:", *("    " + line for line in text.rstrip("\n").split("\n"))]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A plain left-aligned table; cells wider than `DEFAULT_MAX_CELL` are cut."""
    cut = [[_cut(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cut:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(row) for row in cut)]


def _cut(cell: str) -> str:
    return cell if len(cell) <= DEFAULT_MAX_CELL else cell[: DEFAULT_MAX_CELL - 1] + "…"


def age(moment: datetime | None, now: datetime) -> str:
    """How long ago ``moment`` was, e.g. ``2.5s`` or ``3m``."""
    if moment is None:
        return MISSING
    seconds = max((now - moment).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def size(n_bytes: int) -> str:
    """A byte count for people, e.g. ``45.3M``."""
    if n_bytes <= 0:
        return MISSING
    value = float(n_bytes)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


WORKER_HEADERS = ("NAME", "STATUS", "ALIVE", "GROUPS", "FUNCTIONS", "RUNNING", "HEARTBEAT", "RSS",
                  "COORDINATOR")


def worker_row(worker: WorkerRecord, now: datetime) -> list[str]:
    """One row of the ``workers`` table."""
    return [
        worker.worker_name,
        worker.status.value,
        format_value(worker.alive),
        ",".join(worker.group_names) or MISSING,
        ",".join(worker.functions) or MISSING,
        str(len(worker.running)),
        age(worker.last_heartbeat, now),
        size(worker.rss_bytes),
        worker.coordinator or MISSING,
    ]


TASK_HEADERS = ("ID", "STATUS", "FUNCTION", "TASK_NAME", "GROUP", "RUNS", "FAILS", "NEXT_RUN")


def task_row(task: TaskRecord) -> list[str]:
    """One row of the ``tasks`` table."""
    return [
        str(task.id),
        task.status.value,
        task.function_name,
        task.task_name,
        task.group_name or MISSING,
        str(task.times_run),
        str(task.times_failed),
        format_value(task.next_run_time),
    ]
