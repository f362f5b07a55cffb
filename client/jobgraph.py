"""`JobGraph`: web2py's dependency graphs, queued in one validated, atomic call.

A JobGraph only collects: tasks (with queue_task's arguments) and "A waits
for B" edges stay in memory until `JobGraph.validate` sends them all in one
``QueueJob`` call. The coordinator judges the whole graph before writing
anything (every task's field values, cycles, edges to tasks that do not
exist) and then writes every task and edge in one transaction, or nothing.
That is web2py's "validate commits, a failure rolls back", without a
half-written graph ever being visible to workers.

Error keys in `JobGraph.errors`: the graph's own errors as the coordinator
names them (``edges`` for a cycle or an unknown task id, ``edges[N]...`` for
the N-th `JobGraph.add_deps` call, ``uuid`` for a uuid already in use), and
each task's field errors as ``tasks[INDEX].FIELD`` where INDEX is the
`JobTask.index` of the task (e.g. ``tasks[1].timeout``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _convert, _requests
from .scheduler import Scheduler

logger = logging.getLogger(__name__)

#: web2py's default job name.
DEFAULT_JOB_NAME = "job_0"


class JobTask:
    """A task of a `JobGraph`; names it in `JobGraph.add_deps` before it exists.

    Made by `JobGraph.queue_task` only. ``id`` and ``uuid`` stay None until
    the graph is validated successfully, then hold the written task's.
    """

    __slots__ = ("_function_name", "_id", "_index", "_job", "_uuid")

    def __init__(self, job: JobGraph, index: int, function_name: str) -> None:
        """Name the ``index``-th task of ``job`` (see `JobGraph.queue_task`)."""
        self._job = job
        self._index = index
        self._function_name = function_name
        self._id: int | None = None
        self._uuid: str | None = None

    @property
    def job(self) -> JobGraph:
        """The graph this task belongs to."""
        return self._job

    @property
    def index(self) -> int:
        """Position in the graph's tasks, from 0 (the INDEX of ``tasks[INDEX].field`` errors)."""
        return self._index

    @property
    def function_name(self) -> str:
        """The function the task runs (empty if the given function had no name)."""
        return self._function_name

    @property
    def id(self) -> int | None:
        """The task's id once the graph is written; None before or after a failure."""
        return self._id

    @property
    def uuid(self) -> str | None:
        """The task's uuid once the graph is written; None before or after a failure."""
        return self._uuid

    def _written(self, task_id: int | None, uuid: str | None) -> None:
        self._id, self._uuid = task_id, uuid

    def __repr__(self) -> str:
        return f"JobTask(index={self._index}, function={self._function_name!r}, id={self._id})"


class JobGraph:
    """Tasks and their dependencies, written together by one `validate` call.

    Example::

        job = JobGraph(scheduler, "nightly")
        a = job.queue_task("extract", pargs=[1])
        b = job.queue_task("load")
        job.add_deps(b, a)          # b waits until a is COMPLETED
        layers = job.validate()     # [{a.id}, {b.id}], or None and job.errors

    A graph is validated (sent) once; build a new one for the next job. It
    is not meant to be shared between threads while being built.
    """

    def __init__(self, scheduler: Scheduler, job_name: str = DEFAULT_JOB_NAME) -> None:
        """Start an empty graph.

        Args:
            scheduler: The client that will send the graph.
            job_name: A label stored with the job's edges (web2py's job_name).
        """
        self.scheduler = scheduler
        self.job_name = job_name
        #: Why the last `validate` wrote nothing: graph errors (e.g. ``edges``) and
        #: per-task field errors keyed ``tasks[INDEX].FIELD``. Empty otherwise.
        self.errors: dict[str, str] = {}
        self._tasks: list[JobTask] = []
        self._specs: list[Any] = []
        self._client_errors: list[dict[str, str]] = []
        self._edges: list[tuple[_requests.JobNode, _requests.JobNode]] = []
        self._validated = False

    def __repr__(self) -> str:
        state = "validated" if self._validated else "open"
        return (
            f"JobGraph({self.job_name!r}, tasks={len(self._tasks)}, "
            f"edges={len(self._edges)}, {state})"
        )

    @property
    def tasks(self) -> tuple[JobTask, ...]:
        """The graph's tasks, in the order they were added."""
        return tuple(self._tasks)

    @property
    def validated(self) -> bool:
        """True once `validate` got an answer (whatever it was)."""
        return self._validated

    def queue_task(
        self,
        function: str | Callable[..., Any],
        pargs: list[Any] | None = None,
        pvars: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> JobTask:
        """Add a task to the graph; nothing is sent until `validate`.

        Takes exactly `Scheduler.queue_task`'s arguments. The arguments are
        encoded now, so changing ``pargs`` or ``pvars`` afterwards changes
        nothing. Bad field values are not raised: `validate` reports them in
        `errors` as ``tasks[INDEX].FIELD``.

        Returns:
            The handle that names this task in `add_deps`.

        Raises:
            RuntimeError: The graph was validated already.
        """
        self._check_open()
        spec, client_errors = _requests.task_spec_from_call(function, pargs, pvars, kwargs)
        handle = JobTask(self, len(self._tasks), str(spec.function_name))
        self._tasks.append(handle)
        self._specs.append(spec)
        self._client_errors.append(client_errors)
        return handle

    def queue_command(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **kwargs: Any,
    ) -> JobTask:
        """Add a command task to the graph (`Scheduler.queue_command`'s arguments).

        Its handle's ``function_name`` is ``@command``.

        Raises:
            RuntimeError: The graph was validated already.
        """
        command = _requests.command_from_argv(argv, env, cwd)
        return self.queue_task(_requests.COMMAND_FUNCTION, **{**kwargs, "command": command})

    def add_deps(self, task_parent: JobTask | int, task_child: JobTask | int) -> None:
        """Make ``task_parent`` wait until ``task_child`` is COMPLETED for good.

        web2py's argument order: the parent is the task that waits. "For
        good" means after the child's last repeat; a child that ends FAILED,
        TIMEOUT, STOPPED or EXPIRED leaves the parent QUEUED for ever.

        Args:
            task_parent: The waiting task, a `JobTask` of this graph. (An int
                id is sent too, but the coordinator refuses to add
                prerequisites to a task that exists already: `validate`
                reports it as ``edges[N].task``.)
            task_child: The prerequisite: a `JobTask` of this graph, or the
                id of a task that exists already (an unknown id makes
                `validate` fail with an ``edges`` error).

        Raises:
            TypeError: An argument is neither a `JobTask` nor an int id.
            ValueError: A `JobTask` belongs to another graph.
            RuntimeError: The graph was validated already.
        """
        self._check_open()
        edge = (self._node(task_parent, "task_parent"), self._node(task_child, "task_child"))
        self._edges.append(edge)

    def validate(self) -> list[set[int]] | None:
        """Send the graph in one call: every task and edge is written, or nothing.

        Returns:
            On success, the ids of the graph's tasks in topological layers:
            first those that wait for nothing in the graph, then those that
            wait only for earlier layers (tasks that existed already are not
            listed). Every `JobTask` then has its ``id`` and ``uuid``. On any
            error (a cycle, an edge to an unknown task, a task waiting for
            itself, a bad field value) None, with the reasons in `errors`;
            nothing was written.

        Raises:
            RuntimeError: The graph was validated already.
            InvalidArgumentError: The graph has no task (or more than the
                coordinator takes in one call).
            TaskgridError: The call itself failed (e.g. `UnavailableError`);
                the graph stays open so the call can be retried. After a
                `DeadlineExceededError` the job may have been written: give
                its tasks uuids to make a retry safe.
        """
        self._check_open()
        request = _requests.queue_job_request(self.job_name, self._specs, self._edges)
        # Values a spec cannot hold: nothing is sent (the job is refused as if answered).
        refused = any(self._client_errors)
        response = None if refused else self.scheduler._queue_job(request)
        self._validated = True
        results, errors, layers = _convert.job_answer_from_proto(response, self._client_errors)
        self.errors = errors
        if errors:
            logger.debug("job %r not queued: %s", self.job_name, errors)
            return None
        for handle, result in zip(self._tasks, results, strict=True):
            handle._written(result.id, result.uuid)
        return layers

    def _check_open(self) -> None:
        if self._validated:
            raise RuntimeError(
                f"JobGraph {self.job_name!r} was validated already; a graph is sent once, "
                "build a new JobGraph for more tasks"
            )

    def _node(self, ref: object, what: str) -> _requests.JobNode:
        if isinstance(ref, JobTask):
            if ref.job is not self:
                raise ValueError(f"{what} {ref!r} belongs to another JobGraph")
            return ("index", ref.index)
        if isinstance(ref, int) and not isinstance(ref, bool):
            return ("task_id", ref)
        raise TypeError(
            f"{what} is a JobTask of this graph or an existing task's id (int), "
            f"not {type(ref).__name__}"
        )
