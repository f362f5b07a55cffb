"""The worker's channel to its coordinator: plain text or TLS, and its bearer token.

Split in two steps on purpose. `load_security` runs in main.py before any
task child starts: it checks the coordinator address list, reads the PEM
files and applies the rules below, so a bad setting ends the worker with a
clear message and nothing of gRPC exists yet when the children start.
`open_channel` runs in the agent afterwards, once per address it moves to.

The address rules (``HOST:PORT``, comma-separated lists, DNS names expanded
to their records, `Failover`) are the client's: this module imports them from
``taskgrid.client._addresses`` (tests/unit/test_layering.py allows it: only the
coordinator is off limits), so the worker and the client read an address
list the same way.

Rules (the same as the client's):

- the token rides on every call as ``authorization: Bearer <token>``
  metadata, added by a client interceptor, over TLS or plain text alike;
- a token is never sent in plain text to another machine unless the worker
  was started with ``--insecure``; with a list, every address counts;
- the token and key material never appear in a repr or a log line.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from taskgrid.client._addresses import Address, is_loopback_target, split_addresses

logger = logging.getLogger(__name__)

ENV_TOKEN = "TASKGRID_TOKEN"
"""Bearer token when --token is not given."""
ENV_TLS_CA = "TASKGRID_TLS_CA"
ENV_TLS_CERT = "TASKGRID_TLS_CERT"
ENV_TLS_KEY = "TASKGRID_TLS_KEY"
AUTH_METADATA_KEY = "authorization"


@dataclass(frozen=True)
class ChannelSecurity:
    """How the worker reaches its coordinator; secrets are hidden from repr."""

    token: str | None = field(default=None, repr=False)
    tls: bool = False
    root_certificates: bytes | None = field(default=None, repr=False)
    """PEM CA bundle; None with tls: the system's roots."""
    private_key: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = field(default=None, repr=False)
    server_name: str | None = None
    """The name to check the coordinator's certificate against (None: the host dialed)."""


def _read_pem(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ValueError(f"cannot read the TLS {what} file {path}: "
                         f"{error.strerror or error}") from None


def load_security(
    target: str,
    *,
    token: str | None = None,
    tls: bool = False,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    server_name: str | None = None,
    insecure: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ChannelSecurity:
    """Settle the worker's security settings from its flags and the environment.

    Each of token, ca, cert and key falls back to its ``TASKGRID_*`` variable
    when not given; TLS is on with `tls`, when any PEM file is named, or with
    `server_name` (the name the coordinator's certificate is checked against).
    `target` is the coordinator address list (`split_addresses`).

    Raises:
        ValueError: the address list is malformed, a token would go in plain
            text to another machine (any address of the list) without
            `insecure`, the token has spaces or non-ASCII characters, a client
            certificate comes without its key (or the reverse), or a file
            cannot be read. The message never contains the token.
    """
    split_addresses(target)
    env = os.environ if environ is None else environ
    token = token if token is not None else env.get(ENV_TOKEN) or None
    ca = ca or env.get(ENV_TLS_CA) or None
    cert = cert or env.get(ENV_TLS_CERT) or None
    key = key or env.get(ENV_TLS_KEY) or None
    tls = tls or bool(ca or cert or key or server_name)
    if token and (not token.isascii() or not token.isprintable()
                  or any(c.isspace() for c in token)):
        raise ValueError("the token must be printable ASCII without spaces")
    if token and not tls and not insecure and not is_loopback_target(target):
        raise ValueError(
            f"refusing to send the token in plain text to {target}: use TLS (--tls-ca or "
            "--tls) or, on a trusted network, --insecure")
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    return ChannelSecurity(
        token=token or None, tls=tls, root_certificates=_read_pem(ca, "CA"),
        private_key=_read_pem(key, "key"), certificate_chain=_read_pem(cert, "certificate"),
        server_name=server_name or None,
    )  # fmt: skip


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]  # grpc is untyped
):
    """A call's details with the token added to its metadata."""


class _BearerToken(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Adds the bearer token to every call (the worker makes unary calls only)."""

    def __init__(self, token: str) -> None:
        self._entry = (AUTH_METADATA_KEY, f"Bearer {token}")

    def __repr__(self) -> str:
        return "_BearerToken(<redacted>)"

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        """Send the call with the token."""
        details = _CallDetails(
            details.method, details.timeout, [*(details.metadata or ()), self._entry],
            details.credentials, details.wait_for_ready, details.compression,
        )  # fmt: skip
        return continuation(details, request)


def open_channel(
    address: Address, security: ChannelSecurity, options: Sequence[tuple[str, Any]]
) -> grpc.Channel:
    """A channel to `address` with these settings (TLS and token as configured).

    An address expanded from a DNS name keeps the name as the channel's
    authority, so TLS checks the coordinator's certificate against the name;
    ``--tls-server-name`` (`ChannelSecurity.server_name`) overrides the name checked.
    """
    options = list(options)
    if address.authority:
        options.append(("grpc.default_authority", address.authority))
    if security.tls and security.server_name:
        options.append(("grpc.ssl_target_name_override", security.server_name))
    if security.tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=security.root_certificates,
            private_key=security.private_key,
            certificate_chain=security.certificate_chain,
        )
        channel = grpc.secure_channel(address.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address.target, options=options)
    logger.info("coordinator %s over %s%s", address, "TLS" if security.tls else "plain text",
                " with a client certificate" if security.certificate_chain else "")
    if security.token:
        channel = grpc.intercept_channel(channel, _BearerToken(security.token))
    return channel
