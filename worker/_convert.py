"""Pure conversions between taskgrid.v1 messages and the worker's records.

Owns the mapping of a Lease onto the runner's `TaskRun`, of a finished
`RunResult` onto a RunReport, of held leases and output chunks onto their
messages, the Register message built from the worker's flags, the
``stale`` lists of the answers, and the parse of the ``taskgrid-stale-leases``
trailer older coordinators sent with FAILED_PRECONDITION. It makes no RPC,
holds no state and starts no thread: the agent (agent.py) and delivery
(delivery.py) send what it builds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc

from taskgrid import __version__
from taskgrid.v1 import common_pb2, worker_pb2

from .capture import Chunk
from .records import Command, LeaseKey, Outcome, RunResult, TaskRun

if TYPE_CHECKING:
    from .agent import AgentConfig

STALE_LEASES_KEY = "taskgrid-stale-leases"
COMMAND_CAPABILITY = "command"
"""Declared in Register by a worker allowed to run command tasks."""
COMMAND_FUNCTION = "@command"
"""The function name of command tasks: never a function this worker may declare."""

_S = common_pb2
_RUN_STATUS = {
    Outcome.COMPLETED: _S.RUN_STATUS_COMPLETED,
    Outcome.FAILED: _S.RUN_STATUS_FAILED,
    Outcome.TIMEOUT: _S.RUN_STATUS_TIMEOUT,
    Outcome.STOPPED: _S.RUN_STATUS_STOPPED,
}


def lease_keys(refs: Iterable[common_pb2.LeaseRef]) -> set[LeaseKey]:
    """``LeaseRef`` messages (e.g. an answer's ``stale`` list) -> lease keys."""
    return {(ref.task_id, ref.attempt) for ref in refs}


def stale_keys(error: grpc.RpcError) -> set[LeaseKey]:
    """Leases named in the ``taskgrid-stale-leases`` trailer of a FAILED_PRECONDITION.

    Older coordinators answered a call naming a stale lease this way (and
    applied nothing); current ones list stale leases in the answer instead.
    """
    found: set[LeaseKey] = set()
    trailer = getattr(error, "trailing_metadata", None)
    for key, value in (trailer() if trailer else None) or ():
        if key == STALE_LEASES_KEY:
            for item in str(value).split(","):
                task, _, attempt = item.strip().partition(":")
                if task.isdigit() and attempt.isdigit():
                    found.add((int(task), int(attempt)))
    return found


def lease_ref(key: LeaseKey) -> common_pb2.LeaseRef:
    """A held lease -> ``taskgrid.v1.LeaseRef``."""
    return _S.LeaseRef(task_id=key[0], attempt=key[1])


def chunk_to_pb(key: LeaseKey, chunk: Chunk) -> common_pb2.OutputChunk:
    """One captured output chunk of lease ``key`` -> ``taskgrid.v1.OutputChunk``."""
    return _S.OutputChunk(
        task_id=key[0], attempt=key[1], seq=chunk.seq, data=chunk.data, clear=chunk.clear
    )


def register_request(config: AgentConfig) -> worker_pb2.RegisterRequest:
    """The Register message announcing this worker: functions, capacity, capabilities."""
    allowed = config.command_policy.allowed
    return worker_pb2.RegisterRequest(
        worker_name=config.worker_name, group_names=config.group_names,
        functions=sorted(set(config.functions) - {COMMAND_FUNCTION}),
        capacity=config.concurrency, language="python", heartbeat=config.heartbeat,
        hostname=os.uname().nodename, pid=os.getpid(), version=__version__,
        capabilities=[COMMAND_CAPABILITY] if allowed else [],
    )  # fmt: skip


def task_run_from_lease(lease: worker_pb2.Lease) -> TaskRun:
    """Convert a Lease message into the runner's TaskRun."""
    command = None
    if lease.HasField("command"):
        c = lease.command
        command = Command(c.executable, tuple(c.args), dict(c.env), c.cwd)
    return TaskRun(
        task_id=lease.ref.task_id,
        attempt=lease.ref.attempt,
        run_id=lease.run_id,
        uuid=lease.uuid,
        function_name=lease.function_name,
        args=lease.args or "[]",
        vars=lease.vars or "{}",
        timeout=float(lease.timeout),
        sync_output=float(lease.sync_output),
        task_name=lease.task_name,
        command=command,
        traceparent=lease.traceparent,
    )


def report_to_pb(result: RunResult) -> worker_pb2.RunReport:
    """Convert a finished run into a RunReport message."""
    report = worker_pb2.RunReport(
        ref=lease_ref(result.task.key),
        status=_RUN_STATUS[result.outcome],
        traceback=result.traceback,
        output=[chunk_to_pb(result.task.key, chunk) for chunk in result.output],
    )
    if result.result is not None:
        report.result = result.result
    return report
