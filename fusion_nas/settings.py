"""Where fusion-nas keeps its files: one setting, ``FUSION_NAS_HOME`` (default ``./results``).

The default store (``HOME/fusion_nas.db``), NNI's working files (``HOME/nni``), retrained
models (``HOME/retrain``) and offline reports (``HOME/pareto-NAME.html``) all live under it.
``FUSION_NAS_STORE`` overrides only the store URL. ``FUSION_NAS_HEARTBEAT`` sets how often (in
seconds, default 10) a worker tells the store that its running trials are alive; a trial whose
heartbeat is older than 3 x that is taken as lost by the other workers (see
:mod:`fusion_nas.search.loop`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HOME_ENV = "FUSION_NAS_HOME"
STORE_ENV = "FUSION_NAS_STORE"
HEARTBEAT_ENV = "FUSION_NAS_HEARTBEAT"
LATENCY_ENV = "FUSION_NAS_LATENCY"  # default of search --latency: eager, all or off
HEARTBEAT_S = 10  # seconds between heartbeats of a running trial
GRACE_FACTOR = 3  # a trial is stale after GRACE_FACTOR heartbeats missed


def home() -> Path:
    """The results folder: ``$FUSION_NAS_HOME``, else ``results`` under the current directory."""
    return Path(os.environ.get(HOME_ENV) or "results")


def default_store_url() -> str:
    """The embedded SQLite store inside :func:`home`."""
    return f"sqlite:///{(home() / 'fusion_nas.db').as_posix()}"


def nni_dir() -> Path:
    """NNI's log file, experiment directories and experiment list."""
    return home() / "nni"


def retrain_dir() -> Path:
    """Where ``retrain`` writes code, weights and ``result.json`` per trial."""
    return home() / "retrain"


def heartbeat_interval() -> int:
    """Seconds between heartbeats: ``$FUSION_NAS_HEARTBEAT`` (a whole number >= 1), else 10."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if not raw:
        return HEARTBEAT_S
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        from fusion_nas.errors import FusionNasError

        raise FusionNasError(f"{HEARTBEAT_ENV}={raw!r} must be a whole number of seconds >= 1")
    return value


def grace_period() -> int:
    """Seconds without a heartbeat after which a running trial counts as lost."""
    return GRACE_FACTOR * heartbeat_interval()


def default_latency() -> str | None:
    """The latency every trained trial records when ``--latency`` is not given
    (``$FUSION_NAS_LATENCY``; unset: the search decides, ``eager`` when it trains)."""
    return os.environ.get(LATENCY_ENV) or None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for pages, messages and exports).

    Here, below every layer, so that :mod:`fusion_nas.deploy` can redact without the store;
    :mod:`fusion_nas.store.store` re-exports it.
    """
    import sqlalchemy  # only when a URL is redacted: importing the settings stays cheap

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parsable: hide whatever sits between 'user:' and the host's '@'
        return re.sub(r"(://[^/:@\s]*:)[^/\s]*@", r"\1***@", url)
