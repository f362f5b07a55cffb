"""Wiring: build the runtime, the gRPC server and the background reaper. No logic here."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import pathlib
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from taskgrid import tracing
from taskgrid.coordinator import notify, waits
from taskgrid.coordinator.auth import AuthInterceptor, Tokens, is_loopback
from taskgrid.coordinator.clock import Clock, SystemClock
from taskgrid.coordinator.cluster import Cluster, node_name
from taskgrid.coordinator.config import CoordinatorConfig
from taskgrid.coordinator.events import TaskFeed, WorkSignal
from taskgrid.coordinator.health import Health
from taskgrid.coordinator.metrics import Metrics, MetricsInterceptor
from taskgrid.coordinator.reaper import Reaper
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.servicers.admin import AdminServicer
from taskgrid.coordinator.servicers.client import ClientServicer
from taskgrid.coordinator.servicers.worker import WorkerServicer
from taskgrid.coordinator.store import Store, redact_url
from taskgrid.coordinator.timers import Timers
from taskgrid.coordinator.workers import Registry
from taskgrid.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    client_pb2,
    client_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

logger = logging.getLogger(__name__)

#: seconds in-flight calls get to finish at shutdown
SHUTDOWN_GRACE_S = 2.0


class CallCounter(grpc.aio.ServerInterceptor):
    """Counts calls per method, logged at shutdown so costs per task can be measured."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """Count the call and hand it on."""
        self.counts[handler_call_details.method.rsplit("/", 1)[-1]] += 1
        return await continuation(handler_call_details)


@dataclasses.dataclass
class Coordinator:
    """A running coordinator: its server, bound port and background tasks."""

    server: grpc.aio.Server
    port: int
    runtime: Runtime
    stopping: asyncio.Event
    background: list[asyncio.Task[None]]
    calls: CallCounter
    health: Health

    async def stop(self) -> None:
        """Stop serving, finish background work, close the database."""
        await self.health.shutting_down()
        self.stopping.set()
        await self.server.stop(SHUTDOWN_GRACE_S)
        await self.runtime.drain_background()
        for task in self.background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        loop = asyncio.get_running_loop()
        if self.runtime.cluster.shared:
            await loop.run_in_executor(None, self.runtime.cluster.leave)
        if self.runtime.metrics is not None:
            await loop.run_in_executor(None, self.runtime.metrics.close)
        await loop.run_in_executor(None, self.runtime.store.close)
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.calls.counts.items()))
        # bodies: store calls; transactions: commits (group commit runs several bodies in one)
        logger.info("coordinator stopped bodies=%d transactions=%d calls: %s",
                    self.runtime.store.bodies, self.runtime.store.transactions,
                    counts or "none")


class ConfigError(ValueError):
    """Settings that must not be served with (the message says which and why)."""


def _server_credentials(config: CoordinatorConfig) -> grpc.ServerCredentials | None:
    if not config.tls_cert and not config.tls_key:
        if config.tls_client_ca:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (config.tls_cert and config.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    key = pathlib.Path(config.tls_key).read_bytes()
    cert = pathlib.Path(config.tls_cert).read_bytes()
    client_ca = pathlib.Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


async def create_server(config: CoordinatorConfig, clock: Clock | None = None) -> Coordinator:
    """Open the database (migrating it), bind the server and start it.

    `config.listen` may use port 0; the bound port is returned in the result.

    Raises:
        ConfigError: non-loopback listening without tokens (and without --insecure), or
            incomplete TLS settings.
        TokenError: an unusable tokens file or environment variable.
    """
    if config.tracing:
        try:
            tracing.enable()
        except tracing.TracingUnavailableError as exc:
            raise ConfigError(str(exc)) from exc
    tokens = Tokens.load(config.tokens_file)
    if not tokens and not config.insecure and not is_loopback(config.listen):
        raise ConfigError(
            f"refusing to listen on {config.listen} without tokens: anyone who can reach it "
            "could run code on your workers. Give tokens (--tokens-file or "
            "TASKGRID_{CLIENT,WORKER,ADMIN}_TOKENS) or pass --insecure")
    credentials = _server_credentials(config)
    store = Store(config.db_url, durable=config.durable, node=node_name())
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, store.lock_writer)
    except BaseException:
        await loop.run_in_executor(None, store.close)
        raise
    await loop.run_in_executor(None, store.migrate)
    rt = Runtime(config, clock or SystemClock(), store, WorkSignal(), TaskFeed())
    store.spare = rt.signal.spare  # notes leave out work this coordinator takes itself
    store.clock = rt.clock.now
    rt.tokens = tokens
    rt.deps_possible = await rt.store.run(lambda tx: tx.has_unmet_deps())
    rt.registry = Registry(rt)
    await rt.registry.load()
    rt.timers = Timers(rt)
    await rt.timers.load()
    rt.cluster = Cluster(rt, not store.is_sqlite, store.node, config.listen)
    rt.reaper = Reaper(rt)
    subscribe = getattr(rt.clock, "subscribe", None)
    if subscribe is not None:  # a test clock: moving it wakes timers and long-polls
        def moved() -> None:
            loop.call_soon_threadsafe(rt.wake_reaper.set)
            loop.call_soon_threadsafe(rt.signal.fire)
        subscribe(moved)
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes)]
    calls = CallCounter()
    interceptors: list[grpc.aio.ServerInterceptor] = [calls]
    if config.metrics_listen:
        rt.metrics = Metrics()
        store.on_commit = rt.metrics.transaction_seconds.observe
        interceptors.append(MetricsInterceptor(rt.metrics))
    if tokens:
        interceptors.append(AuthInterceptor(tokens))
    server = grpc.aio.server(options=options, interceptors=interceptors)
    client_pb2_grpc.add_ClientServiceServicer_to_server(ClientServicer(rt), server)
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(rt), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(rt), server)
    services = [m.DESCRIPTOR.services_by_name[name].full_name for m, name in (
        (client_pb2, "ClientService"), (worker_pb2, "WorkerService"), (admin_pb2, "AdminService"))]
    health = Health(rt, services)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    # grpcurl and other tools read the API from the server itself: no proto files needed
    reflection.enable_server_reflection(
        [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    if credentials is None:
        port = server.add_insecure_port(config.listen)
    else:
        port = server.add_secure_port(config.listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    stopping = asyncio.Event()
    await health.update()
    background = [asyncio.create_task(health.loop(stopping), name="taskgrid-health")]
    if rt.metrics is not None and config.metrics_listen:
        rt.metrics.serve(config.metrics_listen)
        background.append(asyncio.create_task(rt.metrics.loop(rt, stopping),
                                              name="taskgrid-metrics"))
    if rt.cluster.shared:
        host = config.listen.rsplit(":", 1)[0]
        rt.cluster.listen = f"{host}:{port}"
        await rt.cluster.beat()  # serving, and the leader if nobody else is, before any call
        background.append(asyncio.create_task(rt.cluster.loop(stopping), name="taskgrid-beat"))
        background.append(asyncio.create_task(notify.Listener(rt).loop(stopping),
                                               name="taskgrid-listen"))
        background.append(asyncio.create_task(waits.safety_loop(rt, stopping),
                                               name="taskgrid-waits"))
    await server.start()
    background.append(asyncio.create_task(rt.reaper.loop(stopping), name="taskgrid-reaper"))
    logger.info("serving db=%s tls=%s mtls=%s tokens=%s node=%s", redact_url(config.db_url),
                credentials is not None, bool(config.tls_client_ca), bool(tokens), store.node)
    return Coordinator(server, port, rt, stopping, background, calls, health)
