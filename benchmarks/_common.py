"""What several benchmarks share: opening a search in an in-memory store.

The benchmarks run the real search loop (``prepare``, ``run_trials``) but keep nothing: the
search is opened by :func:`~fusion_nas.search.session.open_search` in
:meth:`Store.in_memory() <fusion_nas.store.store.Store.in_memory>`, as ``run_search`` opens it
in a database store.
"""

from __future__ import annotations

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
