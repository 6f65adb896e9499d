"""The local dashboard: a Starlette app over a results store.

Pages are small Jinja2 shells (autoescaped); their data comes from JSON endpoints that
``static/app.js`` fetches and inserts with ``textContent``, polling every ``poll_ms`` so new
trials of a running search appear without a reload. The figures are the ones of
:mod:`fusion_nas.viz`. Routes (search names travel as query parameters, so any name works):

==============================  =======================================================
``/``                           the searches: status, progress, best accuracy, front size
``/search?name=N``              one search: Pareto plot, hypervolume, operators, trials
``/trial?search=N&number=K``    one trial: stages, cost, validation curve, downloads
``/api/searches``               JSON of ``/``
``/api/search?name=N``          JSON of ``/search`` (``&since=VERSION``: ``unchanged``)
``/api/trial?search=N&number=K``  JSON of ``/trial``
``/download/code?...``          the trial as standalone PyTorch source (``export_code``)
``/download/json?...``          the trial record as JSON
``/static/plotly.min.js``       Plotly.js from the installed ``plotly`` package
==============================  =======================================================

Every response carries a Content-Security-Policy (scripts from this origin only, no inline
script) and ``nosniff``; a served dashboard only answers requests whose ``Host`` it expects.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import numpy as np
import pandas as pd
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fusion_nas.errors import FusionNasError, StoreError
from fusion_nas.store import Store, redact_url
from fusion_nas.viz import (
    curve_figure,
    hypervolume_curve,
    hypervolume_figure,
    operator_figure,
    operator_frequencies,
    pareto_figure,
    pareto_figure_data,
    stage_lines,
)

__all__ = [
    "CSP",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "background_server",
    "bind_socket",
    "create_app",
    "download_filename",
    "loopback_hosts",
    "redact_url",
    "run",
]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
POLL_MS = 2000

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Content-Security-Policy of every response (Plotly.js needs inline styles, not eval)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_HERE = Path(__file__).parent
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_TRIAL_COLUMNS = (
    "number",
    "status",
    "val_acc",
    "macs",
    "params",
    "arch_desc",
    "train_seconds",
    "on_front",
)


# --------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """``value`` with NaN/NaT -> None, numpy scalars -> Python, datetimes -> ISO text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, str):
        return value
    return str(value)


def _json_text(content: Any, indent: int | None = None) -> str:
    """JSON with ``<``, ``>`` and ``&`` as ``\\u`` escapes: inert even if read as HTML."""
    separators = (",", ": ") if indent else (",", ":")
    text = json.dumps(
        _plain(content), ensure_ascii=False, allow_nan=False, indent=indent, separators=separators
    )
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class SafeJSONResponse(JSONResponse):
    """A JSON response whose text never contains ``<``, ``>`` or ``&``."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content`` (NaN -> null, numpy and datetimes converted)."""
        return _json_text(content).encode("utf-8")


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    poll_ms = request.app.state.poll_ms
    html = _TEMPLATES.get_template(template).render(poll_ms=poll_ms, **context)
    return HTMLResponse(html, status_code=status_code)


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return SafeJSONResponse({"error": message}, status_code=status)
    title = {404: "Not found", 400: "Bad request"}.get(status, "Error")
    return _page(request, "error.html", status, page="error", title=title, message=message)


class _NotFound(Exception):
    """Raised by handlers for an unknown search/trial; answered with a 404 page."""


def _query(request: Request, key: str) -> str:
    value = request.query_params.get(key)
    if value is None or value == "":
        raise _NotFound(f"missing query parameter {key!r}")
    return value


def _number(request: Request, key: str = "number") -> int:
    raw = _query(request, key)
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise _NotFound(f"no trial {raw!r}: trial numbers are whole numbers")
    return int(raw)


def _store(request: Request) -> Store:
    return request.app.state.store


def _trials(store: Store, name: str) -> pd.DataFrame:
    try:
        return store.trials(name)
    except StoreError:
        raise _NotFound(f"no search named {name!r}") from None


def _trial_row(store: Store, name: str, number: int) -> dict[str, Any]:
    df = _trials(store, name)
    row = df[df["number"] == number]
    if row.empty:
        raise _NotFound(f"search {name!r} has no trial {number}")
    return row.iloc[0].to_dict()


def _link(path: str, **params: Any) -> str:
    return f"{path}?{urlencode(params)}"


def download_filename(search: str, number: int, suffix: str) -> str:
    """``fusion_<search>_<trial><suffix>`` reduced to ``[A-Za-z0-9._-]`` (at most 100 chars)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", search).strip("._-")[:80] or "search"
    return f"fusion_{safe}_{int(number)}{suffix}"


def _search_status(done: int, requested: int | None, running: int) -> str:
    if running:
        return "running"
    if requested is not None and done >= requested:
        return "done"
    return "stopped"


def _summary(name: str, df: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """One search at a glance (what the list shows and the search page's header)."""
    counts = df.status.value_counts().to_dict()
    ok = df[df.status == "complete"]
    done = int(sum(counts.get(s, 0) for s in ("complete", "failed", "infeasible")))
    requested = meta.get("n_trials")
    running = int(counts.get("running", 0))
    proxy = meta.get("proxy") or {}
    return {
        "name": name,
        "status": _search_status(done, requested, running),
        "done": done,
        "requested": requested,
        "trials": len(df),
        "failed": int(counts.get("failed", 0)),
        "infeasible": int(counts.get("infeasible", 0)),
        "running": running,
        "best_val_acc": float(ok.val_acc.max()) if len(ok) else None,
        "front_size": int(ok.on_front.sum()),
        "space": meta.get("space_name"),
        "dataset": meta.get("dataset"),
        "strategy": meta.get("strategy"),
        "epochs": proxy.get("epochs") if isinstance(proxy, Mapping) else None,
        "max_flops": meta.get("max_flops"),
        "max_params": meta.get("max_params"),
        "created": meta.get("created"),
        "url": _link("/search", name=name),
    }


def _note(row: Mapping[str, Any]) -> str:
    dup = row.get("duplicate_of")
    if dup is not None and not (isinstance(dup, float) and math.isnan(dup)):
        return f"same network as #{int(dup)}"
    reason = row.get("fail_reason")
    return reason if isinstance(reason, str) else ""


def _version(df: pd.DataFrame, meta: Mapping[str, Any]) -> str:
    key = [meta.get("n_trials"), *df[["number", "status", "val_acc"]].astype(str).values.ravel()]
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- pages


def index_page(request: Request) -> Response:
    """The list of searches (filled in by JS from ``/api/searches``)."""
    return _page(request, "index.html", page="index", store_url=redact_url(_store(request).url))


def search_page(request: Request) -> Response:
    """One search: the shell of the plots and the trial table."""
    name = _query(request, "name")
    store = _store(request)
    if not store.has_search(name):
        raise _NotFound(f"no search named {name!r}")
    return _page(request, "search.html", page="search", name=name)


def trial_page(request: Request) -> Response:
    """One trial: the shell of its stages, cost, curve and the download links."""
    name = _query(request, "search")
    number = _number(request)
    row = _trial_row(_store(request), name, number)
    return _page(
        request,
        "trial.html",
        page="trial",
        name=name,
        number=number,
        search_url=_link("/search", name=name),
        code_url=_link("/download/code", search=name, number=number),
        json_url=_link("/download/json", search=name, number=number),
        code_name=download_filename(name, number, ".py"),
        json_name=download_filename(name, number, ".json"),
        has_arch=bool(row.get("arch")),
    )


# --------------------------------------------------------------------------- JSON


def api_searches(request: Request) -> Response:
    """Every search's :func:`_summary`, oldest first."""
    store = _store(request)
    rows = []
    for name in store.search_names():
        try:
            rows.append(_summary(name, store.trials(name), store.search_meta(name)))
        except StoreError:  # deleted since it was listed
            continue
    return SafeJSONResponse({"store": redact_url(store.url), "searches": rows})


def api_search(request: Request) -> Response:
    """Summary, figures and trial table of one search (``since``: skip if unchanged)."""
    name = _query(request, "name")
    store = _store(request)
    df = _trials(store, name)
    meta = store.search_meta(name)
    version = _version(df, meta)
    if request.query_params.get("since") == version:
        return SafeJSONResponse({"name": name, "version": version, "unchanged": True})
    pareto = pareto_figure_data({name: df})
    curve = hypervolume_curve(df)
    trials = []
    for row in df.sort_values("number").to_dict("records"):
        item = {key: row.get(key) for key in _TRIAL_COLUMNS}
        item["note"] = _note(row)
        item["url"] = _link("/trial", search=name, number=int(row["number"]))
        trials.append(item)
    knee = pareto["searches"][0]["knee"]
    return SafeJSONResponse(
        {
            "name": name,
            "version": version,
            "unchanged": False,
            "summary": {
                **_summary(name, df, meta),
                "hypervolume": curve["hypervolume"][-1] if curve["hypervolume"] else 0.0,
                "ref_macs": curve["ref_macs"],
                "knee": None if knee is None else knee["number"],
            },
            "figures": {
                "pareto": pareto_figure(pareto, title=f"{name}: validation accuracy vs. MACs"),
                "hypervolume": hypervolume_figure(curve),
                "operators": operator_figure(operator_frequencies(df)),
            },
            "trials": trials,
        }
    )


def _trial_record(name: str, row: Mapping[str, Any]) -> dict[str, Any]:
    arch = row.get("arch") if isinstance(row.get("arch"), Mapping) else None
    return {
        "search": name,
        "number": row["number"],
        "status": row["status"],
        "val_acc": row.get("val_acc"),
        "macs": row.get("macs"),
        "params": row.get("params"),
        "arch_id": row.get("arch_id"),
        "arch_desc": row.get("arch_desc"),
        "arch": arch,
        "curve": list(row.get("curve") or []),
        "train_seconds": row.get("train_seconds"),
        "fail_reason": row.get("fail_reason"),
        "duplicate_of": row.get("duplicate_of"),
        "on_front": row.get("on_front"),
        "datetime_start": row.get("datetime_start"),
        "datetime_complete": row.get("datetime_complete"),
    }


def api_trial(request: Request) -> Response:
    """One trial's record, its stages as rows and its validation-curve figure."""
    name = _query(request, "search")
    number = _number(request)
    row = _trial_row(_store(request), name, number)
    record = _trial_record(name, row)
    stages = record["arch"]["stages"] if record["arch"] else []
    return SafeJSONResponse(
        {
            **record,
            "stages": stages,
            "stage_lines": stage_lines(record["arch"]),
            "search_url": _link("/search", name=name),
            "figure": curve_figure(record["curve"]),
        }
    )


# --------------------------------------------------------------------------- downloads


def _attachment(body: str, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def download_json(request: Request) -> Response:
    """The trial record as an indented JSON file."""
    name = _query(request, "search")
    number = _number(request)
    record = _trial_record(name, _trial_row(_store(request), name, number))
    return _attachment(
        _json_text(record, indent=2) + "\n",
        "application/json",
        download_filename(name, number, ".json"),
    )


def download_code(request: Request) -> Response:
    """The trial's architecture as standalone PyTorch source; the JSON if export fails."""
    from fusion_nas.arch import Architecture
    from fusion_nas.export import export_code
    from fusion_nas.space import parse_space

    name = _query(request, "search")
    number = _number(request)
    store = _store(request)
    row = _trial_row(store, name, number)
    if not isinstance(row.get("arch"), Mapping):
        raise _NotFound(f"trial {number} of search {name!r} has no architecture")
    meta: dict[str, Any] = {"search": name, "trial": number}
    acc = row.get("val_acc")
    if row["status"] == "complete" and acc is not None and math.isfinite(float(acc)):
        meta["val_accuracy"] = float(acc)
    try:
        space_toml = store.search_meta(name)["space_toml"]
        space = parse_space(space_toml, source="<stored space>")
        source = export_code(Architecture.from_dict(row["arch"]), space, meta=meta)
    except Exception as exc:  # the exporter is optional here: fall back to the JSON
        log.warning("code export of trial %s of %r failed: %s", number, name, exc)
        return download_json(request)
    return _attachment(
        source, "text/x-python; charset=utf-8", download_filename(name, number, ".py")
    )


def plotly_js(request: Request) -> Response:
    """Plotly.js from the installed plotly package (no CDN)."""
    return Response(
        _plotly_bundle(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@cache
def _plotly_bundle() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


# --------------------------------------------------------------------------- app


class SecurityHeaders:
    """ASGI middleware: add :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; stamp the headers on the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Dashboard(Starlette):
    def build_middleware_stack(self) -> ASGIApp:
        # Outermost, so even the 500 page of ServerErrorMiddleware gets the headers.
        return SecurityHeaders(super().build_middleware_stack())


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(request, 404, f"no page at {request.url.path!r}")
    return _error(request, exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("dashboard error on %s", request.url.path, exc_info=exc)
    message = str(exc) if isinstance(exc, FusionNasError) else "internal error; see the log"
    return _error(request, 500, message)


def loopback_hosts(host: str) -> list[str] | None:
    """The ``Host`` names to accept when serving on ``host``; ``None``: any.

    On a loopback address only ``localhost`` and loopback IPs are accepted, which stops DNS
    rebinding (a web page re-pointing its own domain at 127.0.0.1 to read the dashboard).
    """
    if host == "localhost":
        return ["localhost", "127.0.0.1", "::1"]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    return ["localhost", "127.0.0.1", "::1", host] if loopback else None


def create_app(
    store: Store, *, allowed_hosts: Sequence[str] | None = None, poll_ms: int = POLL_MS
) -> Starlette:
    """The dashboard app over ``store``.

    Args:
        store: the results store (opened once, read on every request).
        allowed_hosts: accepted ``Host`` header names (see :func:`loopback_hosts`); ``None``
            accepts any.
        poll_ms: how often pages poll for new trials, in milliseconds.
    """
    routes = [
        Route("/", index_page),
        Route("/search", search_page),
        Route("/trial", trial_page),
        Route("/api/searches", api_searches),
        Route("/api/search", api_search),
        Route("/api/trial", api_trial),
        Route("/download/code", download_code),
        Route("/download/json", download_json),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    middleware = [Middleware(GZipMiddleware, minimum_size=1024)]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = _Dashboard(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            _NotFound: _not_found,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.store = store
    app.state.poll_ms = int(poll_ms)
    return app


# --------------------------------------------------------------------------- serving


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


def _server(store: Store, sock: socket.socket, host: str, log_level: str) -> Any:
    import uvicorn

    app = create_app(store, allowed_hosts=loopback_hosts(host))
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
        _server(store, sock, host, log_level).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def background_server(
    store: Store, host: str = DEFAULT_HOST, port: int = 0, *, log_level: str = "warning"
) -> Iterator[str]:
    """Serve the dashboard in a background thread; yield its base URL (``http://host:port``).

    For tests and scripts: the server stops when the ``with`` block ends.
    """
    sock = bind_socket(host, port)
    server = _server(store, sock, host, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise FusionNasError("the dashboard server did not start")
            time.sleep(0.02)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
