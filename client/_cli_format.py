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

from .records import CommandSpec, OutputChunk, RunRecord, TaskRecord, WorkerRecord

#: Shown for a missing value in human output.
MISSING = "-"
#: Shown for a retry_delay that was never set (the retry comes one period after the run).
UNSET = "unset"
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


def ndjson(document: Any) -> str:
    """One JSON object on one line, as ``tail --json`` streams them."""
    return json.dumps(to_jsonable(document), separators=(",", ":"))


def event_document(event: TaskRecord | OutputChunk) -> dict[str, Any]:
    """One ``tail --json`` line: ``{"event": "status", "task": ...}`` or an output chunk."""
    if isinstance(event, TaskRecord):
        return {"event": "status", "task": event}
    return {"event": "output", **to_jsonable(event)}


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
        if f.name == "command":
            pairs += _command_pairs(value)
        elif f.name == "retry_delay":
            pairs.append((f.name, retry_delay(value)))
        else:
            pairs.append((f.name, value))
    return key_values(pairs)


def retry_delay(value: float | None) -> str:
    """A task's retry_delay for people: ``unset`` (0 or None: web2py's rule) or seconds."""
    return UNSET if not value else format_value(value)


def _command_pairs(command: CommandSpec | None) -> list[tuple[str, Any]]:
    if command is None:
        return [("command", None)]
    pairs: list[tuple[str, Any]] = [("command", command_line(command))]
    if command.env:
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(command.env.items()))
        pairs.append(("command env", env))
    if command.cwd:
        pairs.append(("command cwd", command.cwd))
    return pairs


def traceback_summary(traceback: str) -> str:
    """The line of a traceback that says what went wrong (its last non-empty line).

    A command task's traceback starts with ``exit code N``, which says it best.
    """
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    if not lines:
        return MISSING
    if lines[0].startswith("exit code "):
        return lines[0] + (f": {lines[-1]}" if len(lines) > 1 else "")
    return lines[-1]


def summary_lines(task: TaskRecord, run: RunRecord | None) -> list[str]:
    """What a user wants to know of a task: `status`'s default view (``--verbose``: all).

    Status, name, function (or command), arguments, group, counters and times, the
    worker, and the latest run's result or what made it fail.
    """
    pairs: list[tuple[str, Any]] = [("id", task.id), ("status", task.status),
                                    ("name", task.task_name)]
    if task.command is not None:
        pairs += _command_pairs(task.command)
    else:
        pairs.append(("function", task.function_name))
        if task.args or task.vars:
            pairs.append(("args", task.args))
        if task.vars:
            pairs.append(("vars", task.vars))
    pairs.append(("group", task.group_name))
    if not task.enabled:
        pairs.append(("enabled", False))
    pairs += [("times run", task.times_run), ("times failed", task.times_failed),
              ("start time", task.start_time), ("last run", task.last_run_time),
              ("next run", None if task.status.is_terminal else task.next_run_time)]
    if task.stop_time is not None:
        pairs.append(("stop time", task.stop_time))
    worker = (run.worker_name if run is not None else "") or task.assigned_worker_name
    pairs.append(("worker", worker))
    if run is not None and run.traceback:
        pairs.append(("error", traceback_summary(run.traceback)))
    elif run is not None:
        pairs.append(("result", run.run_result))  # the JSON text: 3, "text", {"a": 1}
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
        lines += output_lines(run)
    return lines


def output_lines(run: RunRecord) -> list[str]:
    """A run's output and traceback, indented under titles (``status --output``)."""
    return _block("output", run.run_output) + traceback_lines(run)


def traceback_lines(run: RunRecord) -> list[str]:
    """A run's traceback, indented under a title; nothing when it has none."""
    return _block("traceback", run.traceback)


def _block(title: str, text: str) -> list[str]:
    if not text:
        return []
    return [f"  {title}:", *("    " + line for line in text.rstrip("\n").split("\n"))]


#: Most task ids a bulk command's answer lists.
MAX_LISTED_IDS = 10


def changed_line(done: str, count: int, task_ids: Sequence[int]) -> str:
    """A bulk command's answer, e.g. ``requeued 2 tasks: 3, 4`` or ``deleted 0 tasks``."""
    line = f"{done} {count} task{'' if count == 1 else 's'}"
    if 0 < len(task_ids) <= MAX_LISTED_IDS:
        line += ": " + ", ".join(str(i) for i in task_ids)
    return line


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
