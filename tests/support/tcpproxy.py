"""A TCP proxy that can cut a process off from a server without closing anything.

`freeze()` stops forwarding bytes both ways while every connection stays open:
to the process behind it, the server has gone silent, as in a network
partition (no reset, no FIN). `thaw()` forwards again. New connections made
while frozen are accepted and held silent too.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable


class FreezableProxy:
    """127.0.0.1:<port> -> a target reached by `connect()` (TCP or a Unix socket)."""

    def __init__(self, connect: Callable[[], socket.socket]) -> None:
        self._connect = connect
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    @classmethod
    def balancing(cls, addresses: list[str]) -> FreezableProxy:
        """An L4 load balancer: each new connection goes to the next backend that accepts."""
        turn = [0]

        def connect() -> socket.socket:
            for _ in range(len(addresses)):
                host, port = addresses[turn[0] % len(addresses)].rsplit(":", 1)
                turn[0] += 1
                try:
                    return socket.create_connection((host, int(port)), timeout=2)
                except OSError:
                    continue
            raise OSError("no backend accepts")
        return cls(connect)

    @classmethod
    def to_unix_socket(cls, path: str) -> FreezableProxy:
        """A proxy to a Unix socket (PostgreSQL's, in the tests)."""
        def connect() -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        return cls(connect)

    def freeze(self) -> None:
        """Stop forwarding: every connection goes silent, none is closed."""
        self._frozen.set()

    def thaw(self) -> None:
        """Forward again."""
        self._frozen.clear()

    def close(self) -> None:
        """Stop the proxy and close every connection."""
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for s in list(self._pairs):
                with contextlib.suppress(OSError):
                    s.close()
            self._pairs.clear()
        self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif not self._frozen.is_set():
                    self._forward(sock)
            if self._frozen.is_set():
                self._stop.wait(0.02)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = self._connect()
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client
        for s in (client, upstream):
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ, None)

    def _forward(self, sock: socket.socket) -> None:
        other = self._pairs.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock, other)
            return
        try:
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._drop(sock, other)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._pairs.pop(s, None)
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(s)
                with contextlib.suppress(OSError):
                    s.close()
