"""Bearer tokens and roles, checked by a server interceptor before any servicer runs.

Three roles: `client` (ClientService: queue, status, list, watch, stop),
`worker` (WorkerService; each call is further checked against the worker's
session and the leases it holds), `admin` (everything, including AdminService).
Tokens come from a file (`--tokens-file`, lines "ROLE TOKEN") and/or the
environment (TASKGRID_CLIENT_TOKENS, TASKGRID_WORKER_TOKENS,
TASKGRID_ADMIN_TOKENS: comma-separated). Only SHA-256 digests are kept, and
they are compared in constant time. Tokens are never logged.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import logging
import os
import pathlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from taskgrid.loopback import is_loopback_host

logger = logging.getLogger(__name__)

AUTH_HEADER = "authorization"
BEARER = "bearer "
ENV_TOKENS = {"client": "TASKGRID_CLIENT_TOKENS", "worker": "TASKGRID_WORKER_TOKENS",
              "admin": "TASKGRID_ADMIN_TOKENS"}


class Role(enum.StrEnum):
    """Who a token speaks for."""

    CLIENT = "client"
    WORKER = "worker"
    ADMIN = "admin"


#: service -> roles allowed to call it
SERVICE_ROLES: Mapping[str, frozenset[Role]] = {
    "taskgrid.v1.ClientService": frozenset({Role.CLIENT, Role.ADMIN}),
    "taskgrid.v1.WorkerService": frozenset({Role.WORKER, Role.ADMIN}),
    "taskgrid.v1.AdminService": frozenset({Role.ADMIN}),
    # the API's own description (grpcurl, dynamic stubs): any valid token
    "grpc.reflection.v1alpha.ServerReflection": frozenset(Role),
}
#: services anyone may call without a token: health probes (Kubernetes sends no credentials)
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})


class TokenError(ValueError):
    """The token configuration is unusable (the message never contains a token)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclasses.dataclass(frozen=True)
class Tokens:
    """Known token digests and their roles."""

    digests: tuple[tuple[bytes, Role], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.digests)

    def role_of(self, token: str) -> Role | None:
        """The role of a presented token, comparing every digest in constant time."""
        presented = _digest(token)
        found: Role | None = None
        for digest, role in self.digests:
            if hmac.compare_digest(presented, digest):
                found = role
        return found

    @classmethod
    def load(cls, path: str | None, environ: Mapping[str, str] | None = None) -> Tokens:
        """Tokens from a file ("ROLE TOKEN" lines, # comments) and the environment."""
        pairs: list[tuple[str, str]] = []
        if path:
            for n, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise TokenError(f"{path}:{n}: expected 'ROLE TOKEN'")
                pairs.append((parts[0], parts[1]))
        env = os.environ if environ is None else environ
        for role, name in ENV_TOKENS.items():
            pairs += [(role, t.strip()) for t in env.get(name, "").split(",") if t.strip()]
        digests = []
        for role, token in pairs:
            if role not in Role.__members__.values():
                raise TokenError(f"unknown role {role!r} (client, worker or admin)")
            if len(token) < 16:
                raise TokenError(f"a {role} token is shorter than 16 characters")
            digests.append((_digest(token), Role(role)))
        return cls(tuple(digests))


def is_loopback(listen: str) -> bool:
    """True when HOST:PORT binds only to this machine."""
    return is_loopback_host(listen.rsplit(":", 1)[0])


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
          ) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that only aborts."""
    async def abort_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            abort_stream, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(
        abort_unary, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


#: an unknown token is logged at most this often (a misconfigured client may retry in a loop)
REJECT_LOG_EVERY_S = 60.0


def caller_role(tokens: Tokens, metadata: Any) -> Role:
    """The role of the token a call presented (the interceptor has let it through).

    With no tokens configured, every caller may do everything: admin.
    """
    if not tokens:
        return Role.ADMIN
    header = dict(metadata or ()).get(AUTH_HEADER, "")
    role = tokens.role_of(header[len(BEARER):].strip()) if isinstance(header, str) else None
    return role or Role.CLIENT


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls with no valid token or of the wrong role, before any servicer.

    Missing or unknown tokens get UNAUTHENTICATED; a role not allowed for the
    service gets PERMISSION_DENIED.
    """

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self._rejected = 0
        self._last_log = -REJECT_LOG_EVERY_S

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Check the bearer token against the method's service."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        service = method.strip("/").split("/", 1)[0]
        if service in OPEN_SERVICES:
            return handler
        header = dict(handler_call_details.invocation_metadata or ()).get(AUTH_HEADER, "")
        if not isinstance(header, str) or not header.lower().startswith(BEARER):
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED,
                         "missing credentials: send 'authorization: Bearer <token>'")
        role = self.tokens.role_of(header[len(BEARER):].strip())
        if role is None:
            self._rejected += 1
            now = time.monotonic()
            if now - self._last_log >= REJECT_LOG_EVERY_S:
                logger.warning("rejected calls with an unknown token count=%d last_method=%s",
                               self._rejected, method)
                self._rejected, self._last_log = 0, now
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        if role not in SERVICE_ROLES.get(service, frozenset()):
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED,
                         f"a {role} token may not call {method}")
        return handler
