"""Serving the dashboard with uvicorn: in the foreground (``fusion-nas serve``) or a thread.

A served dashboard binds its socket first (:func:`bind_socket`), so a taken port is one line
of error before anything starts. It answers only requests whose ``Host`` names the address
the socket is bound to (:func:`fusion_nas.web.security.allowed_hosts`, plus the names of
``--allowed-host``).

Slow clients cannot hold connections open: a request's line and headers must arrive within
:data:`HEADER_TIMEOUT_S` of its first byte (or of the connection, for the first request), an
idle keep-alive connection is closed after :data:`KEEP_ALIVE_S`, and at most
:data:`MAX_CONNECTIONS` connections are served at once (more get a 503).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from fusion_nas.errors import FusionNasError
from fusion_nas.store.store import Store
from fusion_nas.web.app import POLL_MS, create_app
from fusion_nas.web.security import allowed_hosts

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HEADER_TIMEOUT_S",
    "KEEP_ALIVE_S",
    "MAX_CONNECTIONS",
    "background_server",
    "base_url",
    "bind_socket",
    "bound_hosts",
    "run",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
HEADER_TIMEOUT_S = 10.0
"""Seconds a request's line and headers may take to arrive (slowloris)."""
KEEP_ALIVE_S = 5
"""Seconds an idle keep-alive connection stays open."""
MAX_CONNECTIONS = 100
"""Connections served at once; more are answered 503."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        FusionNasError: the address cannot be bound (in use, unknown host, no permission).
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise FusionNasError(f"cannot listen on host {host!r}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "; pick another --port" if port else ""
        raise FusionNasError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
        ) from None
    sock.set_inheritable(True)
    return sock


class _TimedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on each request's line and headers.

    uvicorn times out only idle keep-alive connections; a client that connects and sends
    nothing, or sends a header a byte at a time, would hold its connection forever.
    """

    header_timeout: float = HEADER_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        """Start the first request's deadline as the connection opens."""
        super().connection_made(transport)  # type: ignore[arg-type]
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; a request started gets a deadline, a request received loses it."""
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # a request's head is still arriving
            if self._deadline is None:  # fixed from its first byte, not moved by each byte
                self._deadline = self.loop.call_later(self.header_timeout, self._expire)
        else:
            self._cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._cancel()
        super().connection_lost(exc)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def bound_hosts(sock: socket.socket, host: str, extra: Sequence[str] = ()) -> list[str]:
    """The ``Host`` names a dashboard served on ``sock`` (opened for ``--host host``) answers."""
    return allowed_hosts(sock.getsockname()[0], host, extra)


def _server(
    store: Store,
    sock: socket.socket,
    host: str,
    log_level: str,
    poll_ms: int = POLL_MS,
    extra_hosts: Sequence[str] = (),
    header_timeout: float = HEADER_TIMEOUT_S,
) -> Any:
    import uvicorn

    app = create_app(store, allowed_hosts=bound_hosts(sock, host, extra_hosts), poll_ms=poll_ms)
    protocol = type("TimedH11", (_TimedH11,), {"header_timeout": float(header_timeout)})
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def run(
    store: Store,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    sock: socket.socket | None = None,
    log_level: str = "warning",
    extra_hosts: Sequence[str] = (),
) -> None:
    """Serve the dashboard over ``store`` on ``host:port`` until interrupted (uvicorn).

    ``sock``: an already bound socket (:func:`bind_socket`) to serve on instead;
    ``extra_hosts``: ``Host`` names to answer besides those of the bound address.
    """
    sock = sock if sock is not None else bind_socket(host, port)
    try:
        _server(store, sock, host, log_level, extra_hosts=extra_hosts).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def background_server(
    store: Store,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    log_level: str = "warning",
    poll_ms: int = POLL_MS,
    extra_hosts: Sequence[str] = (),
    header_timeout: float = HEADER_TIMEOUT_S,
) -> Iterator[str]:
    """Serve the dashboard in a background thread; yield its base URL (``http://host:port``).

    For tests and scripts: the server stops when the ``with`` block ends. ``poll_ms``: how
    often its pages poll for new trials; ``extra_hosts``: ``Host`` names to answer besides
    those of the bound address; ``header_timeout``: seconds a request's head may take.
    """
    sock = bind_socket(host, port)
    server = _server(store, sock, host, log_level, poll_ms, extra_hosts, header_timeout)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise FusionNasError("the dashboard server did not start")
            time.sleep(0.02)
        yield base_url(host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def base_url(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 host in brackets)."""
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}"
