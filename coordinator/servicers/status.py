"""The one table from domain errors to gRPC status codes, applied around every method.

Anything unexpected becomes INTERNAL with a short message and an error id;
the traceback goes to the log, never onto the wire (grpc issues #13629).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from taskgrid.coordinator import errors

logger = logging.getLogger(__name__)

CODES: dict[type[errors.TaskgridError], grpc.StatusCode] = {
    errors.TaskNotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnknownWorkerError: grpc.StatusCode.NOT_FOUND,
    errors.BadSessionError: grpc.StatusCode.NOT_FOUND,  # UNAUTHENTICATED = bearer token only
    errors.TransitionConflictError: grpc.StatusCode.ABORTED,
    errors.DuplicateWorkerError: grpc.StatusCode.ALREADY_EXISTS,
    errors.DuplicateUuidError: grpc.StatusCode.ALREADY_EXISTS,
    errors.StoreUnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.NotLeaderError: grpc.StatusCode.UNAVAILABLE,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
}

R = TypeVar("R")

#: a status message travels percent-encoded in the grpc-message trailer, whose limit is
#: 16 KiB; up to 12 bytes per character, so a message echoing a long input is cut to this
MAX_MESSAGE_CHARS = 1000


def clip(message: str) -> str:
    """The message, cut so it always fits the trailer (else the caller sees RESOURCE_EXHAUSTED)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}… ({len(message) - MAX_MESSAGE_CHARS} characters cut)"


def _code(exc: errors.TaskgridError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


async def _abort(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, errors.TaskgridError):
        if isinstance(exc, errors.StoreUnavailableError):
            logger.warning("database unavailable method=%s %s", method, exc)
        await context.abort(_code(exc), clip(str(exc)))
    error_id = uuid.uuid4().hex[:12]
    logger.exception("internal error method=%s error_id=%s", method, error_id)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (error id {error_id})")


def unary(
    fn: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    """Map errors of a unary method to status codes."""
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            if not getattr(self, "checks_serving", False):
                self.rt.cluster.check_serving()  # cut off from the database: callers go elsewhere
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, context, fn.__name__)
            raise  # unreachable: abort raises
    return wrapper


def stream(
    fn: Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]]:
    """Map errors of a server-streaming method to status codes."""
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[R]:
        try:
            self.rt.cluster.check_serving()
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, context, fn.__name__)
    return wrapper
