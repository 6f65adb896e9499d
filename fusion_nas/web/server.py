"""Serving the dashboard with uvicorn: in the foreground (``fusion-nas serve``) or a thread.

A served dashboard binds its socket first (:func:`bind_socket`), so a taken port is one line
of error before anything starts, and on a loopback address it only answers requests whose
``Host`` is a loopback name (:func:`fusion_nas.web.security.loopback_hosts`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fusion_nas.errors import FusionNasError
from fusion_nas.store import Store
from fusion_nas.web.app import POLL_MS, create_app
from fusion_nas.web.security import loopback_hosts

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "background_server", "bind_socket", "run"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        FusionNasError: the address cannot be bound (in use, unknown host, no permission).
    """
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
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


def _server(store: Store, host: str, log_level: str, poll_ms: int = POLL_MS) -> Any:
    import uvicorn

    app = create_app(store, allowed_hosts=loopback_hosts(host), poll_ms=poll_ms)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    return uvicorn.Server(config)


def run(
    store: Store,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    sock: socket.socket | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the dashboard over ``store`` on ``host:port`` until interrupted (uvicorn).

    ``sock``: an already bound socket (:func:`bind_socket`) to serve on instead.
    """
    sock = sock if sock is not None else bind_socket(host, port)
    try:
        _server(store, host, log_level).run(sockets=[sock])
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
) -> Iterator[str]:
    """Serve the dashboard in a background thread; yield its base URL (``http://host:port``).

    For tests and scripts: the server stops when the ``with`` block ends. ``poll_ms``: how
    often its pages poll for new trials.
    """
    sock = bind_socket(host, port)
    server = _server(store, host, log_level, poll_ms)
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
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
