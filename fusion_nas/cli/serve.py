"""``fusion-nas serve``: the local dashboard (Starlette + uvicorn)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.markup import escape

from fusion_nas.cli.common import StoreOption, console, err_console, user_errors
from fusion_nas.errors import FusionNasError, one_line
from fusion_nas.store.store import Store, redact_url, resolve_url
from fusion_nas.web.security import check_host_name, redact_text
from fusion_nas.web.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    base_url,
    bind_socket,
    bound_hosts,
    run,
)


@contextmanager
def _redacted(url: str | None) -> Iterator[None]:
    """Errors inside show the store URL ``url`` (and any other) without its password."""
    try:
        yield
    except FusionNasError as exc:
        raise type(exc)(redact_text(one_line(exc), url or "")) from None


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
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="Also answer requests for this host name (repeatable), e.g. the machine's "
            "name when listening on 0.0.0.0. By default only the bound address (and, on "
            "loopback, localhost) is answered, which stops DNS rebinding; '*' turns the "
            "check off.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the results dashboard: searches, Pareto plots, trials, code downloads."""
    with user_errors():
        extra = [check_host_name(name) for name in allowed_host or []]
        with _redacted(store):
            url = resolve_url(store)
        with _redacted(url):
            st = Store(url, create=False)
        sock = bind_socket(host, port)  # fails here, with one line, if the port is taken
    hosts = bound_hosts(sock, host, extra)
    if "*" in hosts:
        err_console.print(
            "[yellow]Warning:[/] --allowed-host '*': requests for any host name are answered, "
            "so a web page can reach this dashboard through DNS rebinding."
        )
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        err_console.print(
            f"[yellow]Warning:[/] listening on {escape(host)}: anyone who can reach this "
            "address can read the results store."
        )
    url_shown = base_url(host, sock.getsockname()[1]) + "/"
    console.print(
        f"Dashboard of {escape(redact_url(st.url))} at {escape(url_shown)} (Ctrl+C stops)"
    )
    if "*" not in hosts:
        console.print(f"Answers requests for host {escape(', '.join(hosts))}", soft_wrap=True)
    with user_errors(), _redacted(st.url):
        run(st, host, port, sock=sock, extra_hosts=extra)
