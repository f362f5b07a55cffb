"""`taskgrid coordinator`: flags -> CoordinatorConfig -> serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from taskgrid.coordinator import config as cfg
from taskgrid.coordinator.app import ConfigError, create_server
from taskgrid.coordinator.auth import TokenError
from taskgrid.coordinator.errors import WriterLockError


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The coordinator's command line."""
    p = argparse.ArgumentParser(prog="taskgrid coordinator",
                                description="Serve the taskgrid gRPC API over a database.")
    p.add_argument("--db", default=cfg.DEFAULT_DB_URL,
                   help="SQLAlchemy URL: sqlite:///file.sqlite (default) or "
                        "postgresql+psycopg://user@/db?host=/socket/dir")
    p.add_argument("--listen", default=cfg.DEFAULT_LISTEN, help="HOST:PORT (port 0 = any free)")
    p.add_argument("--heartbeat", type=float, default=cfg.DEFAULT_HEARTBEAT_S,
                   help="default worker heartbeat interval, seconds")
    p.add_argument("--dead-after-beats", type=float, default=cfg.DEFAULT_DEAD_AFTER_BEATS,
                   help="heartbeat intervals of silence after which a worker is dead")
    p.add_argument("--max-lost-requeues", type=int, default=cfg.DEFAULT_MAX_LOST_REQUEUES,
                   help="requeues after lost workers before a task ends FAILED")
    p.add_argument("--timeout-grace", type=float, default=cfg.DEFAULT_TIMEOUT_GRACE_S,
                   help="seconds past a task's timeout before the coordinator closes the run")
    p.add_argument("--tokens-file", help="file of 'ROLE TOKEN' lines (roles: client, worker, "
                   "admin); also read: TASKGRID_CLIENT_TOKENS, TASKGRID_WORKER_TOKENS, "
                   "TASKGRID_ADMIN_TOKENS (comma-separated)")
    p.add_argument("--insecure", action="store_true",
                   help="allow listening beyond loopback without tokens")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates (mTLS)")
    p.add_argument("--max-args-bytes", type=int, default=cfg.DEFAULT_MAX_ARGS_BYTES,
                   help="largest args plus vars JSON of a task")
    p.add_argument("--max-result-bytes", type=int, default=cfg.DEFAULT_MAX_RESULT_BYTES,
                   help="largest JSON result of a run (larger: the run ends FAILED)")
    p.add_argument("--max-output-bytes", type=int, default=cfg.DEFAULT_MAX_OUTPUT_BYTES,
                   help="output kept per run; the rest is cut with a marker")
    p.add_argument("--max-message-bytes", type=int, default=cfg.DEFAULT_MAX_MESSAGE_BYTES,
                   help="largest gRPC message")
    p.add_argument("--worker-retention", type=float, default=cfg.DEFAULT_WORKER_RETENTION_S,
                   help="seconds a dead worker stays listed before its row is removed")
    p.add_argument("--durable", action="store_true",
                   help="SQLite: fsync every commit (synchronous=FULL), so a power loss loses "
                   "nothing committed; the default (synchronous=NORMAL) is safe against a "
                   "crash of the process or the coordinator, not of the machine")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def serve(config: cfg.CoordinatorConfig) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    coordinator = await create_server(config)
    host = config.listen.rsplit(":", 1)[0]
    print(f"taskgrid coordinator listening on {host}:{coordinator.port}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    logging.getLogger(__name__).info("shutting down")
    await coordinator.stop()


def main(argv: list[str]) -> int:
    """Entry point of `taskgrid coordinator`."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = cfg.CoordinatorConfig(
        db_url=args.db, listen=args.listen, heartbeat_s=args.heartbeat,
        dead_after_beats=args.dead_after_beats, max_lost_requeues=args.max_lost_requeues,
        timeout_grace_s=args.timeout_grace, tokens_file=args.tokens_file, insecure=args.insecure,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        max_args_bytes=args.max_args_bytes, max_result_bytes=args.max_result_bytes,
        max_output_bytes=args.max_output_bytes, max_message_bytes=args.max_message_bytes,
        worker_retention_s=args.worker_retention, durable=args.durable)
    try:
        asyncio.run(serve(config))
    except (ConfigError, TokenError) as exc:
        print(f"taskgrid coordinator: {exc}", file=sys.stderr)
        return 2
    except WriterLockError as exc:
        print(f"taskgrid coordinator: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"taskgrid coordinator: {exc}", file=sys.stderr)
        return 1
    return 0
