"""`taskgrid coordinator`: settings -> CoordinatorConfig -> serve until SIGTERM/SIGINT.

Every flag can also come from a TASKGRID_... environment variable or the [coordinator] table
of a --config TOML file (taskgrid/settings.py, docs/configuration.md). Logs go to stderr as
text or JSON lines (--log-format, taskgrid/logs.py); the one line "taskgrid coordinator
listening on HOST:PORT" goes to stdout.
"""

from __future__ import annotations

# taskgrid.logs first: it sets GRPC_VERBOSITY before anything loads grpc
from taskgrid import logs

# isort: split
import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Mapping

from taskgrid import settings
from taskgrid.coordinator import config as cfg
from taskgrid.coordinator.app import ConfigError, create_server
from taskgrid.coordinator.auth import TokenError
from taskgrid.coordinator.errors import WriterLockError

logger = logging.getLogger(__name__)
PROG = "taskgrid coordinator"


def build_parser() -> argparse.ArgumentParser:
    """The flags of `taskgrid coordinator`."""
    p = argparse.ArgumentParser(prog=PROG,
                                description="Serve the taskgrid gRPC API over a database. "
                                "Every flag can also be set by TASKGRID_<FLAG> in the "
                                "environment or in the [coordinator] table of --config FILE "
                                "(command line > environment > file > default).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    p.add_argument("--max-lease-wait", type=float, default=cfg.DEFAULT_MAX_LEASE_WAIT_S,
                   help="longest a Lease call may wait for work, seconds")
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
    p.add_argument("--task-retention", type=float, default=cfg.DEFAULT_TASK_RETENTION_S,
                   help="seconds a finished task (its runs and output too) is kept after it "
                   "ended, then purged; 0 keeps them for ever")
    p.add_argument("--durable", action="store_true",
                   help="SQLite: fsync every commit (synchronous=FULL), so a power loss loses "
                   "nothing committed; the default (synchronous=NORMAL) is safe against a "
                   "crash of the process or the coordinator, not of the machine")
    p.add_argument("--tracing", action="store_true",
                   help="OpenTelemetry spans for queueing, leasing and reporting, to the "
                   "process's tracer provider (the tracing extra; docs/tracing.md)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (port 0 = any "
                   "free; docs/metrics.md)")
    p.add_argument("--log-level", default=logs.DEFAULT_LEVEL, type=str.upper,
                   choices=logs.LEVELS, help="logging level")
    p.add_argument("--log-format", default=logs.DEFAULT_FORMAT, choices=logs.FORMATS,
                   help="log lines on stderr: text, or one JSON object per line")
    settings.add_config_flag(p)
    return p


def parse_args(argv: list[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The coordinator's settings: command line > environment > config file > defaults."""
    return settings.parse(build_parser(), "coordinator", argv, environ)


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
    logger.info("shutting down")
    await coordinator.stop()


def main(argv: list[str]) -> int:
    """Entry point of `taskgrid coordinator`."""
    args = parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    config = cfg.CoordinatorConfig(
        db_url=args.db, listen=args.listen, heartbeat_s=args.heartbeat,
        dead_after_beats=args.dead_after_beats, max_lost_requeues=args.max_lost_requeues,
        max_lease_wait_s=args.max_lease_wait,
        timeout_grace_s=args.timeout_grace, tokens_file=args.tokens_file, insecure=args.insecure,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        max_args_bytes=args.max_args_bytes, max_result_bytes=args.max_result_bytes,
        max_output_bytes=args.max_output_bytes, max_message_bytes=args.max_message_bytes,
        worker_retention_s=args.worker_retention, task_retention_s=args.task_retention,
        durable=args.durable,
        metrics_listen=args.metrics_listen, tracing=args.tracing)
    try:
        asyncio.run(serve(config))
    except (ConfigError, TokenError) as exc:
        return _fail(args.log_format, exc, 2)
    except WriterLockError as exc:
        return _fail(args.log_format, exc, 3)
    except OSError as exc:
        return _fail(args.log_format, exc, 1)
    return 0


def _fail(log_format: str, exc: Exception, code: int) -> int:
    """Report a fatal error (a log record in JSON mode, else one plain line); return `code`."""
    if log_format == "json":
        logger.error("%s", exc)
    else:
        print(f"{PROG}: {exc}", file=sys.stderr)
    return code
