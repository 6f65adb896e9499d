"""The local dashboard of ``fusion-nas serve`` (Starlette + uvicorn)."""

from fusion_nas.web.app import (
    CSP,
    DEFAULT_HOST,
    DEFAULT_PORT,
    background_server,
    bind_socket,
    create_app,
    download_filename,
    loopback_hosts,
    redact_url,
    run,
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
