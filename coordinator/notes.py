"""What a transaction tells the other coordinators: collected while it runs, sent on commit.

On PostgreSQL several coordinators share the database; each keeps caches
(parked Lease calls, the lease mirror, worker sessions, watch feeds) of the
facts its own calls commit. A fact committed by one coordinator reaches the
others as a PostgreSQL notification: the store's `Tx` notes what it wrote
here, and the store sends the merged notes with `pg_notify` inside the same
transaction, so they are delivered if and only if it commits (notify.py
receives them). Nothing is noted while no other coordinator is alive.

A note is a hint, never the truth: every receiver also polls the rows, so a
lost notification costs seconds, never correctness.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

#: the one notification channel
CHANNEL = "taskgrid"
#: PostgreSQL refuses payloads of 8,000 bytes or more; longer notes are split
MAX_PAYLOAD = 7000
#: (group, function, target worker or "")
Kind = tuple[str, str, str]


class Notes:
    """The merged notes of one transaction."""

    def __init__(self, node: str, spare: Mapping[tuple[str, str], int] | None = None) -> None:
        self.node = node
        #: this coordinator's parked free slots by (group, function) (events.WorkSignal)
        self.spare = spare or {}
        self.kinds: set[Kind] = set()
        self.count = 0
        self.any_work = False
        self.timers = False
        self.tasks: set[int] = set()
        self.stops: set[tuple[int, int]] = set()
        self.workers: dict[int, str] = {}  # id -> new status
        self.dead: set[int] = set()
        self.moved: dict[int, str] = {}  # worker id -> the node now holding its session

    def __bool__(self) -> bool:
        return bool(self.kinds or self.any_work or self.timers or self.tasks or self.stops
                    or self.workers or self.dead or self.moved)

    def queued(self, kinds: Iterable[tuple[Kind, int]], timed: bool) -> None:
        """Tasks were queued, counted by kind; `timed` if any expires or broadcasts.

        Tasks this coordinator's parked Lease calls will take at once (its spare slots
        for their group and function) are not announced: waking the other coordinators'
        workers for them would only make claims that find nothing.
        """
        for kind, n in kinds:
            left = n if kind[2] else n - self.spare.get((kind[0], kind[1]), 0)
            if left > 0:
                self.kinds.add(kind)
                self.count += left
        self.timers = self.timers or timed

    def requeued(self) -> None:
        """Some task went back to QUEUED (retry, lost worker, next period)."""
        self.any_work = True

    def changed(self, task_ids: Iterable[int]) -> None:
        """These tasks changed (status or output): their watchers look again."""
        self.tasks.update(task_ids)

    def payloads(self) -> list[str]:
        """The notes as JSON payloads, each below MAX_PAYLOAD bytes."""
        head: dict[str, Any] = {"node": self.node}
        if self.kinds or self.any_work:
            head["work"] = {"kinds": sorted(self.kinds), "count": self.count,
                            "any": self.any_work}
        if self.timers:
            head["timers"] = True
        if self.workers:
            head["workers"] = {str(k): v for k, v in self.workers.items()}
        if self.dead:
            head["dead"] = sorted(self.dead)
        if self.moved:
            head["moved"] = {str(k): v for k, v in self.moved.items()}
        out = [json.dumps(head, separators=(",", ":"))] if len(head) > 1 else []
        if out and len(out[0]) > MAX_PAYLOAD:  # many kinds: wake everyone instead of naming
            head["work"] = {"kinds": [], "count": 0, "any": True}
            out = [json.dumps(head, separators=(",", ":"))]
        for key, items in (("tasks", sorted(self.tasks)), ("stops", sorted(self.stops))):
            for part in _parts(items):
                out.append(json.dumps({"node": self.node, key: part}, separators=(",", ":")))
        return out


def _parts(items: Sequence[Any]) -> Iterator[list[Any]]:
    """Slices of `items` whose JSON stays well below MAX_PAYLOAD."""
    step = 150
    for i in range(0, len(items), step):
        yield list(items[i:i + step])


def parse(payload: str) -> dict[str, Any] | None:
    """A received payload, or None if it is not one of ours."""
    try:
        msg = json.loads(payload)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) and isinstance(msg.get("node"), str) else None
