"""The local dashboard of ``fusion-nas serve`` (Starlette + uvicorn) and the offline report.

- :mod:`~fusion_nas.web.app`: ``create_app``, the pages and error answers;
- :mod:`~fusion_nas.web.api`: the JSON endpoints and downloads the pages fetch;
- :mod:`~fusion_nas.web.params`: a request's search and trial, looked up through the store;
- :mod:`~fusion_nas.web.security`: headers, Content-Security-Policy, accepted hosts, redaction;
- :mod:`~fusion_nas.web.serialize`: JSON-safe values, JSON text inert inside HTML;
- :mod:`~fusion_nas.web.render`: the Jinja templates;
- :mod:`~fusion_nas.web.report`: the offline Pareto report of ``fusion-nas pareto``;
- :mod:`~fusion_nas.web.server`: serving with uvicorn (timeouts against slow clients).
"""

from fusion_nas.store.queries import download_filename
from fusion_nas.store.store import redact_url
from fusion_nas.web.app import create_app
from fusion_nas.web.report import report_html
from fusion_nas.web.security import CSP, allowed_hosts, redact_text
from fusion_nas.web.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    background_server,
    base_url,
    bind_socket,
    run,
)

__all__ = [
    "CSP",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "allowed_hosts",
    "background_server",
    "base_url",
    "bind_socket",
    "create_app",
    "download_filename",
    "redact_text",
    "redact_url",
    "report_html",
    "run",
]
