"""Where fusion-nas keeps its files: one setting, ``FUSION_NAS_HOME`` (default ``./results``).

The default store (``HOME/fusion_nas.db``), NNI's working files (``HOME/nni``), retrained
models (``HOME/retrain``) and offline reports (``HOME/pareto-NAME.html``) all live under it.
``FUSION_NAS_STORE`` overrides only the store URL.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "FUSION_NAS_HOME"
STORE_ENV = "FUSION_NAS_STORE"


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
