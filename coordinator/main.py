"""`taskgrid coordinator`: flags -> CoordinatorConfig -> serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from taskgrid.coordinator import config as cfg
from taskgrid.coordinator.app import create_server


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
        timeout_grace_s=args.timeout_grace)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"taskgrid coordinator: {exc}", file=sys.stderr)
        return 1
    return 0
