"""The /metrics HTTP endpoint of a Prometheus registry, shared by the coordinator and worker."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server


class MetricsServer:
    """prometheus-client's HTTP server for one registry, with a clean stop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: Any = None

    def serve(self, listen: str, logger: logging.Logger) -> int:
        """Serve /metrics on `listen` (HOST:PORT, port 0 picks one); returns the port.

        Logs `metrics on http://HOST:PORT/metrics`, which names the port for tools.
        """
        host, _, port = listen.rpartition(":")
        host = host or "127.0.0.1"
        self._server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        bound = int(self._server.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        """Stop serving (blocking: call off an event loop)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
