"""What several benchmarks share: opening a search in an in-memory store.

The benchmarks run the real search loop (``prepare``, ``run_trials``) but keep nothing: the
search is opened by :func:`~fusion_nas.search.session.open_search` in
:meth:`Store.in_memory() <fusion_nas.store.store.Store.in_memory>`, as ``run_search`` opens it
in a database store.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna

from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import open_search
from fusion_nas.search.strategies.base import Strategy
from fusion_nas.store.store import Store


def open_memory_search(config: SearchConfig, strategy: Strategy) -> optuna.Study:
    """A new search for ``config`` in a new in-memory store: its directions, the sampler of
    ``strategy`` (seeded with ``config.seed``) and the search record; nothing touches disk."""
    study, done = open_search(Store.in_memory(), config, strategy)
    assert done == 0  # a new store holds no trials
    return study


def add_proxy_run_args(p: argparse.ArgumentParser, networks: int) -> None:
    """The options of a benchmark that proxy-trains ``--networks`` sampled networks of a space
    under different training settings (``compile_cost.py``, ``precision_branch.py``)."""
    from fusion_nas.training.loop import ProxyConfig

    p.add_argument("--space", default="digits")
    p.add_argument("--dataset", default=None)
    p.add_argument("--networks", type=int, default=networks)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=ProxyConfig().lr)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
