"""The local dashboard: a Starlette app over a results store.

Pages are small Jinja2 shells (autoescaped); their data comes from the JSON endpoints of
:mod:`fusion_nas.web.api`, which ``static/app.js`` fetches and inserts with ``textContent``,
polling every ``poll_ms`` so new trials of a running search appear without a reload. Pages
(search names travel as query parameters, so any name works):

==============================  =======================================================
``/``                           the searches: status, progress, best accuracy, front size
``/search?name=N``              one search: Pareto plot, hypervolume, operators, trials
``/trial?search=N&number=K``    one trial: stages, cost, validation curve, downloads and
                                the "Inside the network" panel (on demand)
==============================  =======================================================

Every response carries the headers of :mod:`fusion_nas.web.security`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from fusion_nas.errors import FusionNasError, one_line
from fusion_nas.store.queries import download_filename
from fusion_nas.store.store import Store, redact_url
from fusion_nas.web import api
from fusion_nas.web.params import NotFound, link, query_param, store_of, trial_of
from fusion_nas.web.render import STATIC_DIR, render
from fusion_nas.web.security import HostCheck, SecurityHeaders, redact_text
from fusion_nas.web.serialize import SafeJSONResponse

__all__ = ["POLL_MS", "create_app"]

log = logging.getLogger(__name__)

POLL_MS = 2000


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = render(template, poll_ms=request.app.state.poll_ms, **context)
    return HTMLResponse(html, status_code=status_code)


# --------------------------------------------------------------------------- pages


def index_page(request: Request) -> Response:
    """The list of searches (filled in by JS from ``/api/searches``)."""
    return _page(request, "index.html", page="index", store_url=redact_url(store_of(request).url))


def search_page(request: Request) -> Response:
    """One search: the shell of the plots and the trial table."""
    name = query_param(request, "name")
    if not store_of(request).has_search(name):
        raise NotFound(f"no search named {name!r}")
    return _page(request, "search.html", page="search", name=name)


def trial_page(request: Request) -> Response:
    """One trial: the shell of its stages, cost, curve and the download links."""
    name, number, row = trial_of(request)
    return _page(
        request,
        "trial.html",
        page="trial",
        name=name,
        number=number,
        search_url=link("/search", name=name),
        code_url=link("/download/code", search=name, number=number),
        json_url=link("/download/json", search=name, number=number),
        code_name=download_filename(name, number, ".py"),
        json_name=download_filename(name, number, ".json"),
        has_arch=bool(row.get("arch")),
        explain_url=link("/api/explain", search=name, number=number),
    )


# --------------------------------------------------------------------------- errors


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return SafeJSONResponse({"error": message}, status_code=status)
    title = {404: "Not found", 400: "Bad request"}.get(status, "Error")
    return _page(request, "error.html", status, page="error", title=title, message=message)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(request, 404, f"no page at {request.url.path!r}")
    return _error(request, exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> Response:
    # The store's errors may quote its URL: the password never reaches the log or the page.
    url = store_of(request).url
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    log.error("dashboard error on %s\n%s", request.url.path, redact_text(trace, url))
    text = one_line(exc) if isinstance(exc, FusionNasError) else "internal error; see the log"
    return _error(request, 500, redact_text(text, url))


# --------------------------------------------------------------------------- app


class _Contained:
    """ASGI middleware: end an error here, once ``_server_error`` has answered and logged it.

    Starlette raises the error on after its 500 answer, and uvicorn would log it again with
    the raw message, a store password included.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:  # answered and logged (redacted) by _server_error
            pass


class _Dashboard(Starlette):
    def build_middleware_stack(self) -> ASGIApp:
        # Outermost, so even the 500 page of ServerErrorMiddleware gets the headers.
        return SecurityHeaders(_Contained(super().build_middleware_stack()))


def create_app(
    store: Store, *, allowed_hosts: Sequence[str] | None = None, poll_ms: int = POLL_MS
) -> Starlette:
    """The dashboard app over ``store``.

    Args:
        store: the results store (opened once, read on every request).
        allowed_hosts: accepted ``Host`` header names
            (:func:`fusion_nas.web.security.allowed_hosts`); ``None`` accepts any.
        poll_ms: how often pages poll for new trials, in milliseconds.
    """
    routes = [
        Route("/", index_page),
        Route("/search", search_page),
        Route("/trial", trial_page),
        Route("/api/searches", api.api_searches),
        Route("/api/search", api.api_search),
        Route("/api/trial", api.api_trial),
        Route("/api/explain", api.api_explain),
        Route("/download/code", api.download_code),
        Route("/download/json", api.download_json),
        Route("/static/plotly.min.js", api.plotly_js),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(GZipMiddleware, minimum_size=1024)]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(HostCheck, allowed=list(allowed_hosts)))
    app = _Dashboard(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            NotFound: _not_found,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.store = store
    app.state.poll_ms = int(poll_ms)
    return app
