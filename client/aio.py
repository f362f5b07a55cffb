"""`AsyncScheduler`: the client for asyncio applications (queue, status, wait, result, stop).

The same requests and records as `Scheduler` (``_requests``, ``_manage``,
``_convert``), sent on a ``grpc.aio`` channel, so waiting for many tasks at
once costs one coroutine each, not one thread each. A call that finds its
coordinator away (UNAVAILABLE) goes on to the next address of the list; like
`Scheduler`, a queue call is sent again only with a uuid the client chose, so
a resend cannot queue a task twice (a duplicate is then read back).
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc

from taskgrid.v1 import client_pb2, client_pb2_grpc

from . import _addresses, _channel, _convert, _manage, _requests
from ._channel import TlsConfig
from .errors import NotFoundError, UnavailableError
from .records import QueueResult, TaskRecord, TaskStatusResult
from .scheduler import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, TaskRef

logger = logging.getLogger(__name__)


class AsyncScheduler:
    """An asyncio client of a taskgrid coordinator (or a list of them).

    ``async with AsyncScheduler("127.0.0.1:50051") as s: await s.result(task_id)``.
    Arguments are those of `Scheduler`.
    """

    def __init__(self, target: str = DEFAULT_TARGET, token: str | None = None,
                 tls: TlsConfig | bool | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 *, insecure: bool = False) -> None:
        """Check the settings now; connect on the first call (see `Scheduler`)."""
        self.target = target
        self.timeout_s = timeout_s
        self._book = _addresses.AddressBook(target, log=logger)
        self._token = _channel.resolve_token(token)
        self._tls = _channel.resolve_tls(tls)
        _channel.refuse_plain_text_token(target, self._token, self._tls, insecure)
        self._metadata = (((_channel.AUTH_METADATA_KEY, f"Bearer {self._token}"),)
                          if self._token else ())
        self._credentials = (_channel.channel_credentials(self._tls)
                             if self._tls is not None else None)
        self._at = 0
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    def __repr__(self) -> str:
        return f"AsyncScheduler({self.target!r})"

    async def __aenter__(self) -> AsyncScheduler:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None

    def _connect(self) -> Any:
        if self._stub is None:
            addresses = self._book.addresses
            address = addresses[self._at % len(addresses)]
            options: list[tuple[str, Any]] = list(_channel.DEFAULT_CHANNEL_OPTIONS)
            if self._tls is not None and self._tls.server_name:
                options.append(("grpc.ssl_target_name_override", self._tls.server_name))
            elif address.authority:
                options.append(("grpc.default_authority", address.authority))
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(address.target, options=options)
            else:
                self._channel = grpc.aio.secure_channel(address.target, self._credentials,
                                                        options=options)
            self._stub = client_pb2_grpc.ClientServiceStub(self._channel)
        return self._stub

    async def _call(self, send: Callable[[Any], Awaitable[Any]]) -> Any:
        """`send(stub)`, on the next address when the coordinator is away (each at most once)."""
        tries = len(self._book.addresses)
        for attempt in range(tries):
            stub = self._connect()
            try:
                return await send(stub)
            except grpc.aio.AioRpcError as exc:
                error = _channel.to_taskgrid_error(exc, self._tls, self._tls is not None)
                if not isinstance(error, UnavailableError) or attempt + 1 == tries:
                    raise error from None
                logger.info("coordinator away; trying the next address error=%s", error)
                await self.close()
                self._at += 1
        raise AssertionError("unreachable")

    async def queue_task(self, function: str | Callable[..., Any], pargs: list[Any] | None = None,
                         pvars: dict[str, Any] | None = None, **kwargs: Any) -> QueueResult:
        """Queue one task; bad field values come back in ``errors`` (as `Scheduler`)."""
        spec, client_errors = _requests.task_spec_from_call(function, pargs, pvars, kwargs)
        if client_errors:
            return QueueResult(id=None, uuid=None, errors=dict(client_errors))
        if not spec.uuid:
            spec.uuid = str(uuidlib.uuid4())  # a resend after a failover cannot queue it twice
        request = client_pb2.QueueTaskRequest(task=spec)
        sent = 0

        async def send(stub: Any) -> Any:
            nonlocal sent
            sent += 1
            return await stub.QueueTask(request, timeout=self.timeout_s, metadata=self._metadata)
        response = await self._call(send)
        if "uuid" in response.errors and sent > 1:  # the first try landed before its answer
            landed = await self.task_status(spec.uuid)
            if landed is not None:
                return QueueResult(id=landed.id, uuid=spec.uuid)
        return _convert.queue_result_from_proto(response, client_errors)

    async def task_status(self, ref: TaskRef) -> TaskRecord | None:
        """The task named by ``ref``, or None."""
        request = client_pb2.GetTaskRequest(ref=_requests.task_ref_to_proto(ref))
        try:
            response = await self._call(lambda stub: stub.GetTask(
                request, timeout=self.timeout_s, metadata=self._metadata))
        except NotFoundError:
            return None
        return _convert.task_from_proto(response.task)

    async def wait(self, ref: TaskRef, timeout: float | None = None) -> TaskStatusResult:
        """Wait until the task ends (see `Scheduler.wait`)."""
        loop = _manage.WaitLoop(ref, timeout)
        while (record := loop.answer(await self._wait_once(loop.request()))) is None:
            pass
        return record

    async def _wait_once(self, request: Any) -> Any:
        return await self._call(lambda stub: stub.WaitTask(
            request, timeout=request.timeout + self.timeout_s, metadata=self._metadata))

    async def result(self, ref: TaskRef, timeout: float | None = None) -> Any:
        """Wait until the task ends and return its result (see `Scheduler.result`)."""
        return _manage.result_of(await self.wait(ref, timeout))

    async def stop_task(self, ref: TaskRef) -> bool:
        """Stop a task (see `Scheduler.stop_task`)."""
        request = client_pb2.StopTaskRequest(ref=_requests.task_ref_to_proto(ref))
        try:
            response = await self._call(lambda stub: stub.StopTask(
                request, timeout=self.timeout_s, metadata=self._metadata))
        except NotFoundError:
            return False
        return bool(response.stopped)

