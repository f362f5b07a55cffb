"""The client's transport: channel creation, credentials, and gRPC error mapping.

This is the only client module that knows ``grpc`` exists beside the stubs'
call sites: it builds the channel a `Scheduler` talks through and turns every
``grpc.RpcError`` into the typed tree of ``taskgrid.client.errors``, so no
gRPC type ever reaches user code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from . import errors

logger = logging.getLogger(__name__)

#: Channel options: keep idle connections healthy across long watches.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)

#: gRPC status name -> client error class. Anything else is a plain TaskgridError.
_ERROR_BY_CODE: dict[str, type[errors.TaskgridError]] = {
    "NOT_FOUND": errors.NotFoundError,
    "INVALID_ARGUMENT": errors.InvalidArgumentError,
    "OUT_OF_RANGE": errors.InvalidArgumentError,
    "ALREADY_EXISTS": errors.AlreadyExistsError,
    "FAILED_PRECONDITION": errors.FailedPreconditionError,
    "ABORTED": errors.AbortedError,
    "PERMISSION_DENIED": errors.PermissionDeniedError,
    "UNAUTHENTICATED": errors.UnauthenticatedError,
    "RESOURCE_EXHAUSTED": errors.ResourceExhaustedError,
    "UNAVAILABLE": errors.UnavailableError,
    "DEADLINE_EXCEEDED": errors.DeadlineExceededError,
    "CANCELLED": errors.CancelledError,
    "UNIMPLEMENTED": errors.UnimplementedError,
    "INTERNAL": errors.InternalError,
    "UNKNOWN": errors.InternalError,
    "DATA_LOSS": errors.InternalError,
}


def create_channel(
    target: str, *, token: str | None = None, tls: bool | None = None
) -> grpc.Channel:
    """Open a channel to the coordinator at ``target`` (``HOST:PORT``).

    Only insecure channels exist for now. Token and TLS support will be
    added here, and only here: a secure channel built from
    ``grpc.ssl_channel_credentials`` composed with per-call credentials
    carrying ``token``. Until then asking for either fails loudly instead of
    silently sending a token in clear text.

    Raises:
        NotImplementedError: ``token`` or ``tls`` was given.
    """
    if token is not None or tls:
        raise NotImplementedError("token and TLS credentials are not supported yet")
    logger.debug("opening insecure channel target=%s", target)
    return grpc.insecure_channel(target, options=list(DEFAULT_CHANNEL_OPTIONS))


def to_taskgrid_error(exc: grpc.RpcError) -> errors.TaskgridError:
    """Translate one gRPC failure into the matching client error."""
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    code_name = str(getattr(code, "name", "UNKNOWN"))
    details = details_fn() if callable(details_fn) else None
    message = str(details) if details else code_name.lower().replace("_", " ")
    cls = _ERROR_BY_CODE.get(code_name, errors.TaskgridError)
    return cls(message, code=code_name)


@contextmanager
def translated_errors() -> Iterator[None]:
    """Run a block of RPCs, raising client errors instead of ``grpc.RpcError``.

    The gRPC exception is not chained: its text is already in the message,
    and chaining would put a transport type back into users' tracebacks.
    """
    try:
        yield
    except grpc.RpcError as exc:
        error = to_taskgrid_error(exc)
        logger.debug("rpc failed code=%s message=%s", error.code, error.message)
        raise error from None
