"""The client's transport: addresses, failover, channels, credentials, gRPC error mapping.

This is the only client module that knows ``grpc`` exists beside the stubs'
call sites: it builds the channel a `Scheduler` talks through (plain text or
TLS, with or without a client certificate, with or without a bearer token)
and turns every ``grpc.RpcError`` into the typed tree of
``taskgrid.client.errors``, so no gRPC type ever reaches user code.

It also owns the coordinator address rules, shared with the Python worker
(``taskgrid.worker.channel`` imports them, so there is one parser): an address
is ``HOST:PORT`` or a comma-separated list of them (``[ADDR]:PORT`` for IPv6),
a DNS name is expanded to one address per record (`AddressBook`), and
`Failover` keeps one channel to the current address and moves to the next
when a call finds it away (docs/connecting.md).

Security rules kept here, in one place:

- A bearer token rides on every call, unary and streaming, as
  ``authorization: Bearer <token>`` metadata, added by a client interceptor
  (so it works over TLS and over loopback plain text alike).
- A token is never sent in plain text to an address beyond this machine
  unless the caller opts in with ``insecure=True`` (``--insecure``): a
  token read off the network is as good as the coordinator's trust. With a
  list of addresses, every one of them must be on this machine.
- Tokens never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import grpc

from . import errors

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


def is_loopback_target(target: str) -> bool:
    """True when every address of `target` is this machine.

    `target` is what `split_addresses` takes (``HOST:PORT``, a comma-separated
    list, ``[::1]:PORT``) or a gRPC target (``dns:``, ``ipv4:``, ``unix:``).
    Hosts are judged as written: a DNS name other than ``localhost`` is
    another machine, whatever it resolves to now.
    """
    entries = [entry.strip() for entry in target.split(",")]
    return bool(entries) and all(_is_loopback_entry(entry) for entry in entries)


def _is_loopback_entry(entry: str) -> bool:
    if entry.startswith(("unix:", "unix-abstract:")):
        return True
    for scheme in GRPC_SCHEMES:
        if entry.startswith(scheme):
            entry = entry[len(scheme):].rsplit("/", 1)[-1]  # dns://resolver/host:port
            break
    if entry.startswith("["):
        host = entry[1:].split("]", 1)[0]
    elif entry.count(":") == 1:
        host = entry.rsplit(":", 1)[0]
    else:  # a bare host, or an IPv6 address without brackets or port
        host = entry
    return _is_loopback_host(host)


def _is_loopback_host(host: str) -> bool:
    host = host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- coordinator addresses ------------------------------------------------------------------

#: Target schemes gRPC resolves itself: an entry starting with one is dialed as it is.
GRPC_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:", "passthrough:")

#: ``resolve(host, port)``: the IP addresses of a host name, best first.
Resolver = Callable[[str, int], Sequence[str]]


@dataclasses.dataclass(frozen=True)
class Address:
    """One coordinator to open a channel to."""

    target: str
    """What the channel dials: ``HOST:PORT``, ``[ADDR]:PORT``, or a gRPC target as given."""
    authority: str | None = None
    """``NAME:PORT`` when `target` is one record of the DNS name NAME: the channel's
    authority, so TLS checks the certificate against the name, not the IP."""

    def __str__(self) -> str:
        return self.target if self.authority is None else f"{self.authority} ({self.target})"


def split_addresses(text: str) -> tuple[str, ...]:
    """The entries of a coordinator address list, checked: ``HOST:PORT`` separated by commas.

    Spaces around entries are ignored; IPv6 addresses go in brackets
    (``[::1]:50051``); an entry starting with a gRPC scheme (``dns:``,
    ``ipv4:``, ``unix:``...) is kept as it is, for gRPC to resolve.

    Raises:
        ValueError: an entry is empty, has no port or a bad one, or is an
            IPv6 address without brackets.
    """
    entries = tuple(entry.strip() for entry in text.split(","))
    for entry in entries:
        if not entry:
            raise ValueError(f"coordinator list {text!r} has an empty address: give HOST:PORT "
                             "addresses separated by commas")
        if not entry.startswith(GRPC_SCHEMES):
            _host_port(entry)
    return entries


def _host_port(entry: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[ADDR]:PORT`` -> (host, port); ValueError naming the entry."""
    bad = f"bad coordinator address {entry!r}: want HOST:PORT ([ADDR]:PORT for IPv6)"
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(bad)
        port_text = rest[1:]
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
    else:
        raise ValueError(bad)
    if not host:
        raise ValueError(bad)
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"bad coordinator address {entry!r}: the port must be a number from 1 "
                         "to 65535")
    return host, int(port_text)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_host(host: str, port: int) -> list[str]:
    """The IP addresses of `host` (socket.getaddrinfo, TCP), in its order, each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def expand_addresses(
    entries: Sequence[str], resolve: Resolver = resolve_host, log: logging.Logger = logger
) -> tuple[Address, ...]:
    """One `Address` per entry, and per record of each DNS name; each once, order kept.

    A name that cannot be resolved now stays one address for gRPC to resolve
    when it connects (as a single address always was), so a DNS hiccup does
    not stop anyone; the next full round of failures resolves it again.
    """
    found: dict[str, Address] = {}  # by target: the first name a record came from keeps it
    for entry in entries:
        if entry.startswith(GRPC_SCHEMES):
            found.setdefault(entry, Address(entry))
            continue
        host, port = _host_port(entry)
        if _is_ip(host):
            found.setdefault(_join(host, port), Address(_join(host, port)))
            continue
        name = _join(host, port)
        try:
            ips = list(resolve(host, port))
        except OSError as error:
            ips = []
            log.warning("cannot resolve coordinator name %s (%s): dialing it as it is", name, error)
        if not ips:
            found.setdefault(name, Address(name))
        for ip in ips:
            found.setdefault(_join(ip, port), Address(_join(ip, port), authority=name))
    return tuple(found.values())


class AddressBook:
    """The coordinator addresses of one client or worker: DNS names expanded, again on demand.

    Not thread-safe on its own: `Failover` uses it under its lock.
    """

    def __init__(
        self, text: str, resolve: Resolver = resolve_host, log: logging.Logger = logger
    ) -> None:
        """Check `text` now (see `split_addresses`); expand it on first use.

        Raises:
            ValueError: the address list is malformed.
        """
        self.text = text
        self.entries = split_addresses(text)
        self._resolve = resolve
        self._log = log
        self._addresses: tuple[Address, ...] | None = None

    @property
    def addresses(self) -> tuple[Address, ...]:
        """The addresses to try, in order (never empty)."""
        if self._addresses is None:
            self._addresses = expand_addresses(self.entries, self._resolve, self._log)
        return self._addresses

    def refresh(self) -> bool:
        """Resolve the names again; True when that changed the set of addresses.

        A DNS server that only reorders its records changes nothing, so the
        current address is kept.
        """
        if not any(not e.startswith(GRPC_SCHEMES) and not _is_ip(_host_port(e)[0])
                   for e in self.entries):
            return False
        fresh = expand_addresses(self.entries, self._resolve, self._log)
        if set(fresh) == set(self.addresses):
            return False
        self._log.info("coordinator addresses changed: %s", ", ".join(map(str, fresh)))
        self._addresses = fresh
        return True


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


# --- failover -------------------------------------------------------------------------------

#: Words of gRPC's details when a call failed before it reached any server.
_UNSENT_DETAILS = ("failed to connect", "connection refused", "dns resolution failed")

S = TypeVar("S")
R = TypeVar("R")


def is_unavailable(error: grpc.RpcError) -> bool:
    """UNAVAILABLE: the coordinator is away (gRPC also says so when it cannot connect)."""
    return bool(error.code() == grpc.StatusCode.UNAVAILABLE)


def is_unsent(error: grpc.RpcError) -> bool:
    """True when the call failed before its request reached a server (no connection).

    Such a call was applied nowhere, so even a non-idempotent one may be sent
    elsewhere. Told from gRPC's details: "failed to connect to all
    addresses", "Connection refused", "DNS resolution failed".
    """
    if not is_unavailable(error):
        return False
    details = error.details()
    return any(words in str(details or "").lower() for words in _UNSENT_DETAILS)


def _always(error: grpc.RpcError) -> bool:
    return True


class Failover(Generic[S]):
    """One channel to the current address of an `AddressBook`, moved on when it is away.

    `S` is what callers call through (a stub, or a bundle of stubs); `connect`
    opens a channel to an address and makes it. Every thread of a client or
    worker shares one Failover: a call takes `current()`, and when it finds
    the coordinator away it asks `rotate(failed)`, which moves only if
    `failed` is still the current one, so that threads failing at once move
    one step, not one step each. A move closes the old channel (cancelling
    calls still on it: `call` sends those again on the new one) and opens the
    next. After every address has failed in a row, DNS names are resolved
    again. With a single address the channel is kept: gRPC reconnects it.
    """

    def __init__(
        self,
        book: AddressBook,
        connect: Callable[[Address], tuple[Any, S]],
        log: logging.Logger = logger,
    ) -> None:
        """Nothing is opened yet: the first `current()` opens the first address."""
        self.book = book
        self._connect = connect
        self._log = log
        self._lock = threading.Lock()
        self._index = 0  # position in the book of the address tried last
        self._address: Address | None = None  # where the current channel goes
        self._misses = 0  # failures that moved on since a coordinator last answered
        self._channel: Any = None
        self._current: S | None = None
        self._closed = False

    def current(self) -> S:
        """What to call through now (the channel to the current address is opened if need be)."""
        with self._lock:
            if self._current is None:
                self._log.debug("coordinator addresses: %s",
                                ", ".join(map(str, self.book.addresses)))  # fmt: skip
                self._address = self.book.addresses[self._index]
                self._channel, self._current = self._connect(self._address)
            return self._current

    @property
    def address(self) -> Address:
        """The current address."""
        with self._lock:
            return self._address or self.book.addresses[self._index]

    @property
    def size(self) -> int:
        """How many addresses there are (a call tries each at most once)."""
        with self._lock:
            return len(self.book.addresses)

    def replace(self, current: S) -> None:
        """Call through `current` at the current address from now on (tests put fakes in)."""
        with self._lock:
            self._address = self._address or self.book.addresses[self._index]
            self._current = current

    def is_moved_from(self, stale: S) -> bool:
        """True when another call moved on from `stale` (its channel is closed or closing)."""
        with self._lock:
            return stale is not self._current and not self._closed

    def rotate(self, failed: S, why: str) -> bool:
        """`failed` found its coordinator away: move to the next address; True if it moved.

        Nothing moves when another call has moved on from `failed` already,
        or when the next address is the same one (a single address).
        """
        with self._lock:
            if failed is not self._current or self._closed:
                return False
            addresses = self.book.addresses
            before = self._address
            index = (self._index + 1) % len(addresses)
            self._misses += 1
            if self._misses >= len(addresses):
                # a full round failed: look the names up again (under the lock: the other
                # calls would only find the same coordinators away meanwhile)
                self._misses = 0
                if self.book.refresh():
                    addresses, index = self.book.addresses, 0
            after = addresses[index]
            self._index = index
            if after == before:
                return False
            try:
                channel, current = self._connect(after)
            except ValueError as error:  # an unusable address: stay on the channel we have
                self._log.error("cannot open a channel to coordinator %s: %s", after, error)
                return False
            stale, self._channel, self._current = self._channel, channel, current
            self._address = after
        self._log.info("coordinator %s away (%s): moving to %s", before, why, after)
        if stale is not None:
            stale.close()
        return True

    def answered(self) -> None:
        """A coordinator answered: the next failure starts a new round."""
        if self._misses:
            with self._lock:
                self._misses = 0

    def close(self) -> None:
        """Close the current channel; calls still on it end CANCELLED."""
        with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def call(
        self,
        send: Callable[[S], R],
        moves_on: Callable[[grpc.RpcError], bool] = is_unavailable,
        resend: Callable[[grpc.RpcError], bool] = _always,
    ) -> R:
        """``send(current())``; after a failure `moves_on` accepts, move on and send again.

        Each address is tried at most once: the last error is raised when every
        one failed in a row (the caller backs off, if it retries at all). A call
        whose failure `resend` refuses (it may have been applied) moves on but
        is not sent again. A call cut off because another one moved on (its
        channel closed under it) is sent again at once, without counting.
        """
        attempts = _Attempts(self, moves_on, resend)
        while True:
            current = self.current()
            try:
                result = send(current)
            except (grpc.RpcError, ValueError) as error:
                if attempts.again(current, error):
                    continue
                raise
            self.answered()
            return result

    def stream(
        self,
        start: Callable[[S], Any],
        restarted: Callable[[], None],
        moves_on: Callable[[grpc.RpcError], bool] = is_unavailable,
    ) -> Iterator[Any]:
        """The messages of ``start(current())``, a stream restarted on the next address.

        When the stream fails in a way `moves_on` accepts (or is cut off by a
        call that moved on), it is started again through the new current
        address and `restarted()` is called before its first message, so the
        consumer can skip what it has seen. Each address is tried at most
        once in a row; a stream that delivered a message starts a new round.
        Closing the iterator cancels the stream.
        """
        attempts = _Attempts(self, moves_on, _always)
        while True:
            current = self.current()
            try:
                stream = start(current)
                try:
                    for message in stream:
                        attempts.reset()
                        yield message
                    return
                finally:
                    stream.cancel()
            except (grpc.RpcError, ValueError) as error:
                if not attempts.again(current, error):
                    raise
            self._log.debug("stream restarted on %s", self.address)
            restarted()


class _Attempts:
    """The attempts of one call through a `Failover`: whether a failure is worth another."""

    def __init__(
        self,
        failover: Failover[Any],
        moves_on: Callable[[grpc.RpcError], bool],
        resend: Callable[[grpc.RpcError], bool],
    ) -> None:
        self._failover = failover
        self._moves_on = moves_on
        self._resend = resend
        self._failures = 0  # addresses found away by this call
        self._cut_off = 0  # attempts cancelled by another call's move

    def reset(self) -> None:
        """A coordinator answered (a stream's message): a new round starts."""
        self._failures = self._cut_off = 0
        self._failover.answered()

    def again(self, current: Any, error: BaseException) -> bool:
        """After `error` from an attempt through `current`: True to try again (moved on)."""
        failover = self._failover
        cancelled = isinstance(error, ValueError) or (  # ValueError: "closed channel"
            isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.CANCELLED)
        if cancelled and self._cut_off < failover.size and failover.is_moved_from(current):
            self._cut_off += 1
            return True
        if not isinstance(error, grpc.RpcError):
            return False
        if not self._moves_on(error):
            if error.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                failover.answered()  # an answer, if not the one hoped for
            return False
        failover.rotate(current, error.code().name)
        self._failures += 1
        return self._failures < failover.size and self._resend(error)
