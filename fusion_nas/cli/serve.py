"""``fusion-nas serve``: the local dashboard (Starlette + uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from fusion_nas.cli.common import StoreOption, console, err_console, user_errors
from fusion_nas.store import Store, redact_url
from fusion_nas.web.security import loopback_hosts
from fusion_nas.web.server import DEFAULT_HOST, DEFAULT_PORT, base_url, bind_socket, run


def serve(
    store: StoreOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. The dashboard has no login: keep the loopback default "
            "unless the network is trusted."
        ),
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
) -> None:
    """Serve the results dashboard: searches, Pareto plots, trials, code downloads."""
    with user_errors():
        st = Store(store, create=False)
        sock = bind_socket(host, port)  # fails here, with one line, if the port is taken
    if loopback_hosts(host) is None:
        err_console.print(
            f"[yellow]Warning:[/] listening on {escape(host)}: anyone who can reach this "
            "address can read the results store."
        )
    url = base_url(host, sock.getsockname()[1]) + "/"
    console.print(f"Dashboard of {escape(redact_url(st.url))} at {escape(url)} (Ctrl+C stops)")
    with user_errors():
        run(st, host, port, sock=sock)
