"""Whether a host is this machine: one rule for the coordinator, the client and the dashboard.

Each refuses something off loopback (a coordinator without tokens, a token in plain
text, a dashboard without a login), so they must agree on what loopback is. Hosts are
judged as written: a DNS name other than ``localhost`` is another machine, whatever it
resolves to now.
"""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` (and ``*.localhost``) and the loopback addresses."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
