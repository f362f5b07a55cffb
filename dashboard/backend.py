"""The coordinator as the dashboard sees it: `Scheduler` clients per token, a page of tasks.

Every `Scheduler` here is synchronous; handlers call these functions through
``starlette.concurrency.run_in_threadpool``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from taskgrid.client import (
    PermissionDeniedError,
    Scheduler,
    TaskRecord,
    TlsConfig,
    UnauthenticatedError,
)

#: Tasks shown per page of the task list.
PAGE_SIZE = 50
#: Clients kept open for logged-in users' tokens (least recently used closed first).
MAX_USER_CLIENTS = 32


class Role(StrEnum):
    """What a dashboard session may do."""

    ADMIN = "admin"
    """Reads everything and acts."""
    CLIENT = "client"
    """Reads everything; every action is refused."""


class UnknownTokenError(Exception):
    """A login token the coordinator does not know (or cannot be sent)."""


@dataclass
class Backend:
    """How to reach the coordinator, the reading client, and one client per user token."""

    target: str
    token: str | None
    tls: TlsConfig | bool | None = None
    insecure: bool = False
    timeout_s: float = 10.0
    _reader: Scheduler | None = None
    _users: OrderedDict[str, Scheduler] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _own_role: Role | None = None

    def client(self, token: str | None = None) -> Scheduler:
        """A client with `token` (None: the dashboard's own, reading token)."""
        with self._lock:
            if token is None:
                if self._reader is None:
                    self._reader = self.new_client(None)
                return self._reader
            found = self._users.get(token)
            if found is None:
                found = self._users[token] = self.new_client(token)
                while len(self._users) > MAX_USER_CLIENTS:
                    self._users.popitem(last=False)[1].close()
            self._users.move_to_end(token)
            return found

    def new_client(self, token: str | None) -> Scheduler:
        """A new client of its own (a watch gets one, so closing it cancels the stream).

        None is the dashboard's own token (``--token`` or ``$TASKGRID_TOKEN``).
        """
        own = self.token if token is None else token
        return Scheduler(self.target, token=own if own is not None else None, tls=self.tls,
                         timeout_s=self.timeout_s, insecure=self.insecure)

    def own_role(self) -> Role:
        """The role of the dashboard's own token: ADMIN when there is none (asked once).

        Raises:
            UnauthenticatedError: the coordinator does not know it, or wants one.
        """
        if self._own_role is None:
            self._own_role = self.role_of(self.client())
        return self._own_role

    def check_token(self, token: str) -> Role:
        """The role of a login token, asked of the coordinator.

        Raises:
            UnknownTokenError: the coordinator does not know it, or it cannot be sent.
        """
        try:
            probe = self.new_client(token)
        except ValueError as exc:
            raise UnknownTokenError(str(exc).replace(token, "<token>")) from None
        try:
            return self.role_of(probe)
        except UnauthenticatedError:
            raise UnknownTokenError("unknown token") from None
        finally:
            probe.close()

    @staticmethod
    def role_of(client: Scheduler) -> Role:
        """ADMIN if `client` may list workers, CLIENT if it is refused that only.

        Raises:
            UnauthenticatedError: the coordinator does not know the token (or wants one).
        """
        try:
            client.get_workers()
        except PermissionDeniedError:
            return Role.CLIENT
        return Role.ADMIN

    def close(self) -> None:
        """Close every client."""
        with self._lock:
            clients = [*self._users.values(), *([self._reader] if self._reader else [])]
            self._users.clear()
            self._reader = None
        for client in clients:
            client.close()


@dataclass(frozen=True)
class TaskFilters:
    """The task list's filters, as the page's form gives them."""

    status: str | None = None
    group_name: str | None = None
    function_name: str | None = None
    task_name: str | None = None
    uuid: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    oldest_first: bool = False


def list_page(client: Scheduler, filters: TaskFilters, page_token: str = "",
              size: int = PAGE_SIZE) -> tuple[list[TaskRecord], str]:
    """One page of tasks in the list's order, and the next page's token ("" on the last).

    One ListTasks call of `size` tasks, keyset-paged on the id: a page costs the same with a
    million tasks.
    """
    page = client.list_tasks_page(
        filters.status, filters.group_name, filters.function_name, filters.task_name,
        page_size=size, page_token=page_token, uuid=filters.uuid,
        created_after=filters.created_after, created_before=filters.created_before,
        oldest_first=filters.oldest_first)
    return list(page.tasks), page.next_page_token
