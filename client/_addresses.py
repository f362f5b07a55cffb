"""Coordinator address lists: parsing, DNS expansion, and the loopback rule for lists.

One parser for the client and the Python worker (``taskgrid.worker.channel``
and ``taskgrid.worker.agent`` import it): an address is ``HOST:PORT`` or a
comma-separated list of them (``[ADDR]:PORT`` for IPv6; an entry starting
with a gRPC scheme such as ``dns:`` or ``unix:`` is kept for gRPC to
resolve), and a DNS name is expanded to one `Address` per record
(`AddressBook`, resolved again on demand). `is_loopback_target` says whether
every address of a list is this machine, which the plain-text token rule
needs (docs/connecting.md). Nothing here knows gRPC: opening channels is
``_channel``'s, moving between addresses is ``_failover``'s.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence

from taskgrid.loopback import is_loopback_host

logger = logging.getLogger(__name__)

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
    return is_loopback_host(host)

