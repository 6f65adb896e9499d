"""What keeps the dashboard and the offline report safe to open: headers, CSP, accepted hosts.

Every dashboard response carries :data:`SECURITY_HEADERS` (scripts from this origin only, no
inline script, ``nosniff``, no framing); a dashboard served on a loopback address answers only
requests whose ``Host`` is a loopback name (:func:`loopback_hosts`), which stops DNS rebinding.
The offline report states :data:`REPORT_CSP` in a meta tag: it may load nothing at all.
"""

from __future__ import annotations

import ipaddress

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "REPORT_CSP", "SECURITY_HEADERS", "SecurityHeaders", "loopback_hosts"]

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

_LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


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


def loopback_hosts(host: str) -> list[str] | None:
    """The ``Host`` names to accept when serving on ``host``; ``None``: any.

    On a loopback address only ``localhost`` and loopback IPs are accepted, which stops DNS
    rebinding (a web page re-pointing its own domain at 127.0.0.1 to read the dashboard).
    """
    if host == "localhost":
        return list(_LOOPBACK_NAMES)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    return [*_LOOPBACK_NAMES, host] if loopback else None
