"""What several benchmarks share: opening a search on an in-memory study.

The benchmarks run the real search loop (``prepare``, ``run_trials``) but keep nothing: the
study lives in memory, with the search record written as ``run_search`` writes it.
"""

from __future__ import annotations

import optuna

from fusion_nas.search.loop import SearchConfig
from fusion_nas.search.strategies.base import Strategy
from fusion_nas.store import records


def open_memory_search(config: SearchConfig, strategy: Strategy) -> optuna.Study:
    """A new in-memory study for ``config``: its directions, the sampler of ``strategy`` (seeded
    with ``config.seed``) and the search record; nothing is written to disk."""
    # Once the store offers it, this becomes Store.in_memory().create_study(...), so the
    # benchmarks open a search exactly as run_search does.
    study = optuna.create_study(
        directions=list(records.DIRECTIONS), sampler=strategy.sampler(config.space, config.seed)
    )
    records.write_search(study, config.record())
    return study
