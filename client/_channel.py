"""The client's transport: channels, credentials, the bearer token, gRPC error mapping.

This is the only client module that knows ``grpc`` exists beside the stubs'
call sites and `Failover` (``_failover``): it builds the channel a
`Scheduler` talks through (plain text or TLS, with or without a client
certificate, with or without a bearer token) and turns every
``grpc.RpcError`` into the typed tree of ``taskgrid.client.errors``, so no
gRPC type ever reaches user code. Coordinator address lists are
``_addresses``'s; moving between them is ``_failover``'s.

Security rules kept here, in one place:

- A bearer token rides on every call, unary and streaming, as
  ``authorization: Bearer <token>`` metadata, added by a client interceptor
  (so it works over TLS and over loopback plain text alike).
- A token is never sent in plain text to an address beyond this machine
  unless the caller opts in with ``insecure=True`` (``--insecure``): a
  token read off the network is as good as the coordinator's trust. With a
  list of addresses, every one of them must be on this machine
  (`_addresses.is_loopback_target`).
- Tokens never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc

from . import errors
from ._addresses import Address, is_loopback_target

logger = logging.getLogger(__name__)

#: Environment variable holding the bearer token when none is passed.
ENV_TOKEN = "TASKGRID_TOKEN"
#: Environment variables naming PEM files when no TLS setting is passed.
ENV_TLS_CA = "TASKGRID_TLS_CA"
ENV_TLS_CERT = "TASKGRID_TLS_CERT"
ENV_TLS_KEY = "TASKGRID_TLS_KEY"
#: The metadata key the coordinator reads the token from (lowercase, as gRPC requires).
AUTH_METADATA_KEY = "authorization"

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


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """How to reach a coordinator over TLS (``Scheduler(tls=TlsConfig(...))``).

    Every field is optional: ``TlsConfig()`` trusts the system's root CAs and
    presents no client certificate, like ``tls=True``.
    """

    ca: str | os.PathLike[str] | None = None
    """PEM file of the CA(s) that signed the coordinator's certificate; None: system roots."""
    cert: str | os.PathLike[str] | None = None
    """PEM client certificate chain, for a coordinator that requires one (mTLS)."""
    key: str | os.PathLike[str] | None = None
    """PEM private key of ``cert``; given together with it."""
    server_name: str | None = None
    """Name to check the coordinator's certificate against instead of the target's host."""


def resolve_token(token: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token to send: ``token``, else ``$TASKGRID_TOKEN``; None when there is none.

    An empty string means "no token", even when the environment has one.

    Raises:
        ValueError: the token cannot be sent as a header (the message never quotes it).
    """
    if token is None:
        token = (os.environ if environ is None else environ).get(ENV_TOKEN, "")
    if not token:
        return None
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("the token must be printable ASCII without spaces")
    return token


def resolve_tls(
    tls: TlsConfig | bool | None, environ: Mapping[str, str] | None = None
) -> TlsConfig | None:
    """The TLS settings to use, or None for plain text.

    ``None`` reads ``$TASKGRID_TLS_CA``, ``$TASKGRID_TLS_CERT`` and
    ``$TASKGRID_TLS_KEY`` (TLS when any is set); ``True`` is TLS with the
    system's roots; ``False`` is plain text whatever the environment says.
    """
    if tls is None:
        env = os.environ if environ is None else environ
        ca, cert, key = (env.get(name) or None for name in (ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY))
        return TlsConfig(ca, cert, key) if ca or cert or key else None
    if tls is True:
        return TlsConfig()
    if tls is False:
        return None
    return tls



def _read_pem(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} file {os.fspath(path)!s}: "
                         f"{exc.strerror or exc}") from None


def channel_credentials(tls: TlsConfig) -> Any:
    """``grpc.ChannelCredentials`` for these TLS settings (files are read now).

    Raises:
        ValueError: a client certificate without its key (or the reverse), or a
            file that cannot be read.
    """
    if (tls.cert is None) != (tls.key is None):
        raise ValueError("a TLS client certificate and its key go together "
                         "(cert= and key=, or --tls-cert and --tls-key)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(tls.ca, "CA"),
        private_key=_read_pem(tls.key, "key"),
        certificate_chain=_read_pem(tls.cert, "certificate"),
    )


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]  # grpc is untyped
):
    """A call's details with one more metadata entry."""


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]  # grpc is untyped
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds ``authorization: Bearer <token>`` to every unary and server-streaming call.

    The protocol has no client-streaming calls, so those two kinds are all it needs.
    """

    def __init__(self, token: str) -> None:
        self._entry = (AUTH_METADATA_KEY, f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerToken(<redacted>)"

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method, details.timeout, [*(details.metadata or ()), self._entry],
            details.credentials, details.wait_for_ready, details.compression,
        )  # fmt: skip

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        """Send the unary call with the token."""
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        """Send the streaming call with the token."""
        return continuation(self._details(details), request)


def refuse_plain_text_token(
    target: str, token: str | None, tls: TlsConfig | None, insecure: bool
) -> None:
    """Refuse a `token` bound in plain text for another machine, unless `insecure`.

    Every address of a list counts: one of them beyond this machine is enough.

    Raises:
        ValueError: the token would travel in plain text beyond loopback.
    """
    if token and tls is None and not insecure and not is_loopback_target(target):
        raise ValueError(
            f"refusing to send a token in plain text to {target}: use TLS (--tls-ca or "
            "--tls, tls=TlsConfig(...)) or, on a trusted network, --insecure (insecure=True)")


def create_channel(
    target: str | Address,
    *,
    token: str | None = None,
    tls: TlsConfig | None = None,
    insecure: bool = False,
    options: Sequence[tuple[str, Any]] = DEFAULT_CHANNEL_OPTIONS,
    credentials: Any = None,
) -> grpc.Channel:
    """Open a channel to one coordinator (``HOST:PORT``, or an `Address`).

    Args:
        target: The coordinator's address. An `Address` expanded from a DNS
            name keeps that name as the channel's authority, so a TLS
            certificate is checked against the name (unless
            ``tls.server_name`` says otherwise).
        token: Bearer token sent on every call (already resolved: see `resolve_token`).
        tls: TLS settings, or None for plain text (see `resolve_tls`).
        insecure: Allow sending ``token`` in plain text beyond loopback.
        options: gRPC channel options.
        credentials: ``channel_credentials(tls)`` made earlier, so that opening
            another channel after a failover reads no file.

    Raises:
        ValueError: a token would travel in plain text to another machine without
            ``insecure``, or the TLS settings are unusable.
    """
    address = target if isinstance(target, Address) else Address(target)
    # judged on the name as the user wrote it (see is_loopback_target)
    refuse_plain_text_token(address.authority or address.target, token, tls, insecure)
    channel_options = list(options)
    if tls is not None and tls.server_name:
        channel_options.append(("grpc.ssl_target_name_override", tls.server_name))
    elif address.authority:
        channel_options.append(("grpc.default_authority", address.authority))
    if tls is None:
        logger.debug("opening plain-text channel target=%s token=%s", address, bool(token))
        channel = grpc.insecure_channel(address.target, options=channel_options)
    else:
        logger.debug("opening TLS channel target=%s client_cert=%s token=%s",
                     address, tls.cert is not None, bool(token))  # fmt: skip
        channel = grpc.secure_channel(address.target, credentials or channel_credentials(tls),
                                      options=channel_options)  # fmt: skip
    if token:
        channel = grpc.intercept_channel(channel, BearerToken(token))
    return channel


def tls_hint(details: str, tls: bool, client_cert: bool) -> str | None:
    """The likely cause of a connection failure that TLS settings explain, or None.

    gRPC reports these as bare transport errors ("Socket closed", a handshake
    failure); the hint names the setting to look at.
    """
    text = details.lower()
    if "certificate_verify_failed" in text or "unable to get local issuer" in text:
        return ("the coordinator's certificate is not signed by a CA this client trusts: "
                "pass the CA that signed it with --tls-ca (TlsConfig(ca=...))")
    if "handshake" in text and ("wrong version" in text or "http_request" in text
                                or "record" in text):
        return ("the coordinator does not speak TLS: leave out --tls/--tls-ca, or check "
                "the address")
    if "hostname" in text or "subject alternative" in text or "peer name" in text:
        return ("the coordinator's certificate does not name this address: connect by a name "
                "it lists, or set TlsConfig(server_name=...)")
    if "socket closed" in text or "connection reset" in text:
        if not tls:
            return ("if the coordinator serves TLS, connect with --tls (or --tls-ca CA.pem): "
                    "it closes plain-text connections")
        if not client_cert:
            return ("if the coordinator requires client certificates (mTLS), pass "
                    "--tls-cert and --tls-key")
        return ("if the coordinator requires client certificates, check that --tls-cert is "
                "signed by the CA it trusts (--tls-client-ca)")
    return None


def to_taskgrid_error(exc: grpc.RpcError, tls: TlsConfig | None = None,
                      secured: bool = False) -> errors.TaskgridError:
    """Translate one gRPC failure into the matching client error.

    A connection failure that TLS settings explain gets the likely cause added
    (`tls_hint`); `secured` says the channel was made with TLS (`tls` its settings).
    """
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    code_name = str(getattr(code, "name", "UNKNOWN"))
    details = details_fn() if callable(details_fn) else None
    message = str(details) if details else code_name.lower().replace("_", " ")
    if code_name in ("UNAVAILABLE", "UNKNOWN") and details:
        hint = tls_hint(str(details), secured, bool(tls is not None and tls.cert))
        if hint:
            message = f"{message} (likely cause: {hint})"
    cls = _ERROR_BY_CODE.get(code_name, errors.TaskgridError)
    return cls(message, code=code_name)


@contextmanager
def translated_errors(tls: TlsConfig | None = None, secured: bool = False) -> Iterator[None]:
    """Run a block of RPCs, raising client errors instead of ``grpc.RpcError``.

    The gRPC exception is not chained: its text is already in the message,
    and chaining would put a transport type back into users' tracebacks.
    """
    try:
        yield
    except grpc.RpcError as exc:
        error = to_taskgrid_error(exc, tls, secured)
        logger.debug("rpc failed code=%s message=%s", error.code, error.message)
        raise error from None
