"""``taskgrid dashboard``: serve the web dashboard of a coordinator over HTTP (uvicorn).

Once it listens it prints exactly one line on stdout, ``dashboard listening on
http://HOST:PORT``; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from types import FrameType

from taskgrid.client import TlsConfig
from taskgrid.client.scheduler import DEFAULT_TARGET
from taskgrid.loopback import is_loopback_host

from .backend import Backend

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8080"
ENV_COORDINATOR = "TASKGRID_COORDINATOR"
ENV_SESSION_SECRET = "TASKGRID_DASHBOARD_SECRET"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``taskgrid dashboard``."""
    p = argparse.ArgumentParser(
        prog="taskgrid dashboard",
        description="Serve a web dashboard of a taskgrid coordinator (docs/dashboard.md).")
    p.add_argument("--coordinator", metavar="HOST:PORT[,HOST:PORT...]",
                   default=os.environ.get(ENV_COORDINATOR) or DEFAULT_TARGET,
                   help=f"coordinator address(es) (default: ${ENV_COORDINATOR} or "
                        f"{DEFAULT_TARGET})")
    p.add_argument("--listen", metavar="HOST:PORT", default=DEFAULT_LISTEN,
                   help=f"HTTP address to serve on; port 0 picks a free one (default: "
                        f"{DEFAULT_LISTEN}). Beyond loopback a login is always required")
    p.add_argument("--token", metavar="TOKEN", default=None,
                   help="the dashboard's own token, used for every read; give it the admin "
                        "role so it can list workers (default: $TASKGRID_TOKEN)")
    p.add_argument("--require-login", action="store_true",
                   help="ask for a token even on loopback")
    p.add_argument("--session-secret", metavar="SECRET", default=None,
                   help=f"key signing session cookies (default: ${ENV_SESSION_SECRET}, else "
                        "random per process: a restart logs everyone out)")
    p.add_argument("--secure-cookie", action="store_true",
                   help="mark the session cookie Secure (behind an HTTPS proxy)")
    security = p.add_argument_group("reaching the coordinator")
    security.add_argument("--tls", action="store_true",
                          help="use TLS with the system's root CAs (implied by --tls-*)")
    security.add_argument("--tls-ca", metavar="PEM", help="CA bundle of the coordinator")
    security.add_argument("--tls-cert", metavar="PEM", help="client certificate")
    security.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    security.add_argument("--insecure", action="store_true",
                          help="allow tokens in plain text to a coordinator on another machine")
    return p


def split_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``) as (host, port).

    Raises:
        ValueError: no port, or not a number.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen wants HOST:PORT, not {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``taskgrid dashboard`` until interrupted; returns the exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host, port = split_listen(args.listen)
    except ValueError as exc:
        print(f"taskgrid dashboard: {exc}", file=sys.stderr)
        return 2
    tls: TlsConfig | bool | None = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        tls = TlsConfig(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    elif args.tls:
        tls = True
    backend = Backend(args.coordinator, token=args.token, tls=tls, insecure=args.insecure)
    try:
        backend.client()  # refuses unusable settings (a plain-text token, a bad TLS file) now
    except ValueError as exc:
        print(f"taskgrid dashboard: {exc}", file=sys.stderr)
        return 2
    require_login = args.require_login or not is_loopback_host(host)
    secret = args.session_secret or os.environ.get(ENV_SESSION_SECRET) or secrets.token_hex(32)

    import uvicorn

    from .app import Settings, create_app

    app = create_app(Settings(backend=backend, require_login=require_login,
                              session_secret=secret, https_cookie=args.secure_cookie))
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"taskgrid dashboard: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    logger.info("dashboard of %s, login %s", args.coordinator,
                "required" if require_login else "not required (loopback)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.end_streams()  # open event streams would hold the shutdown up
            super().handle_exit(sig, frame)

    server = Server(config)
    print(f"dashboard listening on http://{shown}:{bound}", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
