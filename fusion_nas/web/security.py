"""What keeps the dashboard and the offline report safe to open: headers, CSP, accepted hosts.

Every dashboard response carries :data:`SECURITY_HEADERS` (scripts from this origin only, no
inline script, ``nosniff``, no framing). A served dashboard answers only requests whose ``Host``
is one of the names of :func:`allowed_hosts`, built from the address its socket is actually
bound to (plus the names given with ``--allowed-host``), which stops DNS rebinding: a web page
that re-points its own domain at the dashboard's address still sends its own domain as ``Host``.
The offline report states :data:`REPORT_CSP` in a meta tag: it may load nothing at all.
:func:`redact_text` hides a store password in any text a page, a log or an error line shows.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

import sqlalchemy
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fusion_nas.errors import FusionNasError
from fusion_nas.store.store import redact_url

__all__ = [
    "CSP",
    "LOOPBACK_NAMES",
    "REPORT_CSP",
    "SECURITY_HEADERS",
    "HostCheck",
    "SecurityHeaders",
    "allowed_hosts",
    "check_host_name",
    "host_name",
    "redact_text",
]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Content-Security-Policy of every response (Plotly.js needs inline styles, not eval)."""

REPORT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; "
    "form-action 'none'"
)
"""Content-Security-Policy of the offline report: its inlined scripts run, nothing is fetched."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""``Host`` names of a dashboard bound to a loopback (or every) address."""


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


def host_name(host: str) -> str:
    """``host`` as :func:`allowed_hosts` compares it: no brackets or trailing dot, lower case,
    IP addresses in their canonical form (``[0:0::1]`` -> ``::1``)."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name.split("%", 1)[0]))
    except ValueError:
        return name


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(host_name(address)).is_unspecified
    except ValueError:
        return False


def allowed_hosts(bound: str, host: str | None = None, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names a dashboard whose socket is bound to address ``bound`` answers.

    Args:
        bound: the IP address the socket is bound to (``sock.getsockname()[0]``), not the
            ``--host`` text: ``--host 127.1`` binds ``127.0.0.1``, ``--host localhost`` may
            bind ``::1``.
        host: the ``--host`` text; a name the user chose to listen on is accepted too (an
            unspecified address such as ``0.0.0.0`` names no host and is left out).
        extra: the ``--allowed-host`` names (``*`` accepts any ``Host``: no check at all).

    Returns:
        The loopback names (:data:`LOOPBACK_NAMES`) when ``bound`` is a loopback or an
        unspecified address (``0.0.0.0`` and ``::`` answer on loopback too), the bound address
        itself, ``host`` and ``extra``; no duplicates.
    """
    ip = ipaddress.ip_address(host_name(bound))
    names: list[str] = []
    if ip.is_loopback or ip.is_unspecified:
        names += LOOPBACK_NAMES
    if not ip.is_unspecified:
        names.append(str(ip))
    if host and not _unspecified(host):
        names.append(host_name(host))
    names += [host_name(name) for name in extra]
    return list(dict.fromkeys(names))


_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def check_host_name(name: str) -> str:
    """``name`` (an ``--allowed-host`` value) as :func:`host_name` compares it.

    Raises:
        FusionNasError: ``name`` is neither a host name, an IP address nor ``*``.
    """
    norm = host_name(name)
    if norm == "*" or _NAME.fullmatch(norm):
        return norm
    try:
        return str(ipaddress.ip_address(norm))
    except ValueError:
        raise FusionNasError(
            f"--allowed-host {name!r} is not a host name; expected a name such as 'nas-box' "
            "or 'nas-box.lab.example' (no port), an IP address, or '*' for any"
        ) from None


_HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/@\s]+)(?::[0-9]*)?")


class HostCheck:
    """ASGI middleware: answer 400 to a request whose ``Host`` is not in ``allowed``.

    IP literals match in any spelling (``[::1]``, ``[0::1]``); ``*`` in ``allowed`` accepts
    any ``Host``.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {host_name(name) for name in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a request with an allowed ``Host`` on; answer any other with a 400."""
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        match = _HOST_HEADER.fullmatch(header)
        if match is None or host_name(match[1]) not in self.allowed:
            response = PlainTextResponse("Invalid host header", status_code=400)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def redact_text(text: str, url: str) -> str:
    """``text`` with the password of store ``url`` (may be empty) hidden wherever it shows.

    The URL itself becomes :func:`~fusion_nas.store.store.redact_url`'s form; the password alone
    (also percent-decoded, as drivers print it) and any other ``scheme://user:password@``
    become ``***``.
    """
    secrets = set()
    if url:
        text = text.replace(url, redact_url(url))
        secrets.add(url.partition("://")[2].rpartition("@")[0].partition(":")[2])  # as typed
        try:
            secrets.add(str(sqlalchemy.engine.make_url(url).password or ""))  # decoded
        except Exception:  # not a URL: the pattern below still applies
            pass
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:  # shorter ones would blank out ordinary words
            text = text.replace(secret, "***")
    return re.sub(r"(://[^/@\s:]*:)[^\s/]*@", r"\1***@", text)
