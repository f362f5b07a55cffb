"""Dependency graphs: validate a whole job, then write its tasks and edges at once.

Edges read "task waits for waits_for" (web2py's task_parent waits for
task_child). A waiting task must be one of this request's tasks; what it
waits for may be one of them or a task that exists already. So every cycle
lies among the new tasks, and is found before anything is written
(contract §2.9); an edge to an unknown task is an error too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from taskgrid.coordinator.errors import DuplicateUuidError, TaskNotFoundError
from taskgrid.coordinator.lifecycle import TaskStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx
from taskgrid.coordinator.tasks import Queued, validated

logger = logging.getLogger(__name__)

DEFAULT_JOB_NAME = "job_0"
#: ("index", i) for a task of the request, ("task_id", id) for an existing one
NodeRef = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class JobAnswer:
    """Per-task answers, graph errors, and the new tasks' ids in topological layers."""

    results: list[Queued]
    errors: dict[str, str]
    layers: list[list[int]]


def _check_edges(n: int, edges: Sequence[tuple[NodeRef, NodeRef]]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for i, (task, waits_for) in enumerate(edges):
        if task[0] != "index":
            errors[f"edges[{i}].task"] = "must be a task of this request (an index)"
        for name, ref in (("task", task), ("waits_for", waits_for)):
            if ref[0] == "index" and not 0 <= ref[1] < n:
                errors[f"edges[{i}].{name}"] = f"no task at index {ref[1]} (there are {n})"
        if task == waits_for:
            errors[f"edges[{i}]"] = "a task cannot wait for itself"
    return errors


def layers_of(n: int, edges: Sequence[tuple[int, int]]) -> tuple[list[list[int]], list[int]]:
    """Topological layers of indexes 0..n-1 (Kahn), and the indexes stuck on a cycle."""
    waits: dict[int, set[int]] = {i: set() for i in range(n)}
    for task, prerequisite in edges:
        waits[task].add(prerequisite)
    layers: list[list[int]] = []
    done: set[int] = set()
    while len(done) < n:
        ready = sorted(i for i in range(n) if i not in done and waits[i] <= done)
        if not ready:
            return layers, sorted(set(range(n)) - done)
        layers.append(ready)
        done.update(ready)
    return layers, []


async def queue_job(
    rt: Runtime, job_name: str, specs: Sequence[tuple[Mapping[str, Any], Mapping[str, str]]],
    edges: Sequence[tuple[NodeRef, NodeRef]],
) -> JobAnswer:
    """Validate a graph, then write every task and edge in one transaction, or nothing."""
    n = len(specs)
    rows, results = validated(rt, specs)
    errors = _check_edges(n, edges)
    if not errors:
        _, stuck = layers_of(n, [(t[1], w[1]) for t, w in edges if w[0] == "index"])
        if stuck:
            errors["edges"] = f"cycle among the tasks at indexes {stuck}"
    if errors or rows is None:
        return JobAnswer(results, errors, [])
    existing = sorted({w[1] for _, w in edges if w[0] == "task_id"})
    name = job_name or DEFAULT_JOB_NAME

    def write(tx: Tx) -> tuple[list[int] | None, dict[str, str]]:
        found = tx.tasks_by_ids(existing, lock=True)
        missing = [i for i in existing if i not in found]
        if missing:
            return None, {"edges": f"no task with id {', '.join(map(str, missing))}"}
        taken = tx.existing_uuids(r["uuid"] for r in rows)
        if taken:
            return None, {"uuid": f"already in use: {', '.join(sorted(taken))}"}
        ids = tx.insert_tasks(rows)
        tx.insert_deps([
            {"job_name": name, "task_parent": ids[t[1]],
             "task_child": ids[w[1]] if w[0] == "index" else w[1],
             "can_visit": w[0] == "task_id" and found[w[1]]["status"] == TaskStatus.COMPLETED}
            for t, w in edges])
        return ids, {}

    if edges:
        rt.deps_possible = True  # before the edges exist: no claim may skip their check
    try:
        ids, problems = await rt.store.run(write)
    except DuplicateUuidError:
        ids, problems = None, {"uuid": "already in use (queued concurrently by another call)"}
    if ids is None:
        return JobAnswer(results, problems, [])
    rt.signal.fire()  # some of these wait for others: let every parked worker look
    rt.timers.note(rows)
    logger.info("job queued job=%s tasks=%d edges=%d", name, n, len(edges))
    layers, _ = layers_of(n, [(t[1], w[1]) for t, w in edges if w[0] == "index"])
    return JobAnswer([Queued(id=i, uuid=r["uuid"]) for i, r in zip(ids, rows, strict=True)],
                     {}, [[ids[i] for i in layer] for layer in layers])


#: a GetJob answer lists at most this many edges, and the tasks they name
MAX_JOB_EDGES = 5000
MAX_JOB_TASKS = 1000


async def get_job(rt: Runtime, job_name: str | None, task_id: int | None
                  ) -> tuple[str, list[Row], list[Row]]:
    """(job name, its tasks by id, its edges) by name or by one of its tasks."""
    def read(tx: Tx) -> tuple[str | None, list[Row], list[Row]]:
        name = job_name if job_name is not None else tx.job_of(int(task_id or 0))
        if name is None:
            return None, [], []
        edges = tx.job_edges(name, MAX_JOB_EDGES)
        ids = sorted({e["task_parent"] for e in edges} | {e["task_child"] for e in edges})
        found = tx.tasks_by_ids(ids[:MAX_JOB_TASKS])
        return name, [found[i] for i in sorted(found)], edges

    name, rows, edges = await rt.store.run(read)
    if name is None or not edges:
        what = f"job {job_name!r}" if job_name is not None else f"a job with task {task_id}"
        raise TaskNotFoundError(f"no {what}")
    return name, rows, edges
