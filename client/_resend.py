"""What a call sent again after a failover must not repeat: queued tasks, or watch events.

`Scheduler` sends a call that finds its coordinator away to the next address
(``_failover``). For reads, stops and admin calls that is harmless; two kinds
of call need a rule, kept here:

- a queue request may have been applied by a coordinator that died before
  answering: `QueueResend` says when it may be sent again without queueing
  its tasks twice, and `job_answer` rebuilds a job's answer from the tasks
  found already queued (``Scheduler._landed`` reads them back);
- a restarted WatchTask stream begins again from the start: `WatchResume`
  cuts what the caller has already been shown.
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taskgrid.v1 import client_pb2

from . import _failover
from .errors import ProtocolError
from .records import OutputChunk, TaskEvent, TaskRecord

if TYPE_CHECKING:
    import grpc


class QueueResend:
    """When a queue request may be sent again after UNAVAILABLE, without queueing it twice.

    A coordinator can die after committing a request and before answering, so
    a blind resend could queue the tasks twice. Every task sent without a
    uuid is given a fresh one (uuid4, as the coordinator would) so that a
    resend of a request that was in fact applied is refused as "uuid already
    in use", which `Scheduler._landed` recognises and answers with the tasks
    already queued. A request whose every task has the caller's uuid cannot
    be recognised that way: it is sent again only when it never reached a
    coordinator (gRPC could not connect).
    """

    def __init__(self, specs: Sequence[Any]) -> None:
        self.specs = specs
        self.generated: list[str] = []
        """The uuids this client made up, in task order."""
        self.maybe_applied = False
        """An attempt failed after it may have reached a coordinator."""
        for spec in specs:
            if not spec.HasField("uuid"):
                spec.uuid = str(uuidlib.uuid4())
                self.generated.append(spec.uuid)

    def allows(self, error: grpc.RpcError) -> bool:
        """Whether the request may be sent to the next address after `error`."""
        if _failover.is_unsent(error):
            return True
        if not self.generated:
            return False
        self.maybe_applied = True
        return True


def job_answer(request: Any, ids: Sequence[int]) -> Any:
    """The QueueJobResponse of a job found queued: its ids, in the coordinator's layers."""
    waits: dict[int, set[int]] = {i: set() for i in range(len(ids))}
    for edge in request.edges:
        if edge.waits_for.WhichOneof("ref") == "index":
            waits[edge.task.index].add(edge.waits_for.index)
    layers: list[list[int]] = []
    done: set[int] = set()
    while len(done) < len(ids):
        ready = sorted(i for i in waits if i not in done and waits[i] <= done)
        if not ready:  # never: the coordinator refuses a cycle before writing anything
            raise ProtocolError("the queued job has a cycle")
        layers.append(ready)
        done.update(ready)
    return client_pb2.QueueJobResponse(
        results=[client_pb2.QueueTaskResponse(id=i, uuid=t.uuid)
                 for i, t in zip(ids, request.tasks, strict=True)],
        layers=[client_pb2.JobLayer(task_ids=[ids[i] for i in layer]) for layer in layers],
    )  # fmt: skip


class WatchResume:
    """What a restarted WatchTask stream must not show the caller again.

    A new stream starts from the beginning: each run's output so far comes as
    one catch-up chunk, then the task, then live chunks (coordinator/watch.py).
    So for every run already followed, the new stream's text is rebuilt until
    it covers what the caller holds; only the rest is shown (with ``clear``
    when the text was cleared meanwhile), then its chunks pass again. A task
    snapshot equal to the last one shown is dropped once after a restart.
    Sequence numbers shown stay increasing per run.
    """

    def __init__(self) -> None:
        self._shown: dict[tuple[int, int], str] = {}  # (run, attempt) -> text the caller holds
        self._seq: dict[tuple[int, int], int] = {}  # (run, attempt) -> last seq shown
        self._replayed: dict[tuple[int, int], str] = {}  # runs the new stream is replaying
        self._last_task: TaskRecord | None = None
        self._restarted = False

    def restart(self) -> None:
        """A new stream begins: the runs shown so far will be replayed."""
        self._replayed = {key: "" for key in self._shown}
        self._restarted = True

    def admit(self, event: TaskEvent | None) -> TaskEvent | None:
        """The event to show for `event`, or None when the caller has seen it already."""
        if isinstance(event, TaskRecord):
            if self._restarted and event == self._last_task:
                event = None
            self._restarted = False
            if event is not None:
                self._last_task = event
            return event
        if event is None:
            return None
        key = (event.run_id, event.attempt)
        if key in self._replayed:
            event = self._catch_up(key, event)
            if event is None:
                return None
        last = self._seq.get(key, 0)
        if event.seq <= last:
            event = dataclasses.replace(event, seq=last + 1)
        self._seq[key] = event.seq
        held = "" if event.clear else self._shown.get(key, "")
        self._shown[key] = held + event.data
        return event

    def _catch_up(self, key: tuple[int, int], chunk: OutputChunk) -> OutputChunk | None:
        """A replayed chunk of a run shown before: what it adds, once the replay passes it."""
        if chunk.clear:  # a replay never starts with a clear: this one is new
            del self._replayed[key]
            return chunk
        text, shown = self._replayed[key] + chunk.data, self._shown[key]
        if len(text) < len(shown) and shown.startswith(text):
            self._replayed[key] = text  # not up to what the caller holds yet
            return None
        del self._replayed[key]
        if text == shown:
            return None
        if text.startswith(shown):
            return dataclasses.replace(chunk, data=text[len(shown):])
        return dataclasses.replace(chunk, data=text, clear=True)  # cleared meanwhile
