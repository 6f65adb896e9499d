"""The search loop: validate everything, open or resume the study, let the strategy run.

``run_search`` checks the space, dataset, strategy and budgets *before* it writes anything,
so bad input leaves the store untouched. A :class:`SearchSession` is what a strategy talks
to: ``start(trial, arch)`` costs the architecture and either records it at once (over budget,
or a network already evaluated in this search) or hands it to the worker pool;
``finish(trial, outcome)`` records the result. Both Optuna and NNI strategies go through it,
so every trial lands in the store with the same fields.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from fusion_nas.arch import Architecture
from fusion_nas.cost import Cost, count_cost
from fusion_nas.errors import FusionNasError, StoreError
from fusion_nas.evaluate import EvalTask, InlinePool, Outcome, ProcessPool, dataset_for
from fusion_nas.model import build_model
from fusion_nas.pareto import pareto_mask
from fusion_nas.space import SearchSpace, parse_space
from fusion_nas.store import META_KEY, Store, trials_frame
from fusion_nas.strategies import Strategy, make_strategy
from fusion_nas.train import ProxyConfig

# Settings that must match when a search is resumed: they decide what a trial's score means.
_FINGERPRINT = ("space", "dataset", "proxy", "strategy", "seed", "max_flops", "max_params")


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search."""

    name: str
    space: SearchSpace
    dataset: str
    strategy: str = "optuna:nsga2"
    trials: int = 20
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    seed: int = 0
    max_flops: int | None = None
    max_params: int | None = None
    trial_timeout: float | None = None
    workers: int = 1
    data_dir: str | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str) or len(self.name) > 200:
            raise FusionNasError(f"search name {self.name!r} must be 1 to 200 characters")
        if self.trials < 1:
            raise FusionNasError(f"--trials must be at least 1, got {self.trials}")
        if self.workers < 1:
            raise FusionNasError(f"--workers must be at least 1, got {self.workers}")
        for flag, value in (("--max-flops", self.max_flops), ("--max-params", self.max_params)):
            if value is not None and value <= 0:
                raise FusionNasError(f"{flag} must be positive, got {value}")
        if self.trial_timeout is not None and self.trial_timeout <= 0:
            raise FusionNasError(f"--trial-timeout must be positive, got {self.trial_timeout}")

    def meta(self) -> dict[str, Any]:
        """The search record stored with the study."""
        from fusion_nas import __version__

        return {
            "space_name": self.space.name,
            "space_toml": self.space.source,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "proxy": self.proxy.to_dict(),
            "strategy": self.strategy,
            "strategy_options": self.strategy_options,
            "seed": self.seed,
            "max_flops": self.max_flops,
            "max_params": self.max_params,
            "trial_timeout": self.trial_timeout,
            "workers": self.workers,
            "n_trials": self.trials,
            "version": __version__,
            "objectives": ["val_acc (maximize)", "macs (minimize)"],
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }


def _fingerprint(meta: dict[str, Any]) -> dict[str, Any]:
    space = parse_space(meta["space_toml"], source="<stored space>")
    return {
        "space": (
            space.name,
            space.kind,
            space.size,
            space.channels,
            space.classes,
            space.stem,
            space.stages,
            space.mlp_ratio,
        ),
        "dataset": meta["dataset"],
        "proxy": meta["proxy"],
        "strategy": meta["strategy"],
        "seed": meta["seed"],
        "max_flops": meta.get("max_flops"),
        "max_params": meta.get("max_params"),
    }


@dataclass
class Progress:
    """Where a running search stands (passed to the progress callback after every trial)."""

    done: int
    total: int
    failed: int
    infeasible: int
    best_val_acc: float | None
    front_size: int
    last_status: str
    last_desc: str


class SearchSession:
    """What strategies talk to: costs, budgets, de-duplication, evaluation and recording."""

    def __init__(
        self,
        config: SearchConfig,
        study: optuna.Study,
        pool: InlinePool | ProcessPool,
        total: int,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.config, self.study, self.pool = config, study, pool
        self.space = config.space
        self.total = total
        self.on_progress = on_progress
        self._costs: dict[str, Cost] = {}
        self._pending: dict[int, tuple[Architecture, Cost]] = {}
        # Already evaluated networks of this search (resume included): arch_id -> trial.
        self.seen: dict[str, optuna.trial.FrozenTrial] = {}
        self._results: list[tuple[str, float | None, int | None]] = []  # (status, acc, macs)
        for t in study.get_trials(deepcopy=False):
            status = t.user_attrs.get("status")
            if t.state == TrialState.COMPLETE:
                self.seen.setdefault(t.user_attrs.get("arch_id"), t)
                self._results.append(
                    (status, t.user_attrs.get("val_acc"), t.user_attrs.get("macs"))
                )
            elif t.state == TrialState.FAIL:
                self._results.append(("failed", None, None))

    # ------------------------------------------------------------------ costs and budgets

    def cost(self, arch: Architecture) -> Cost:
        """Exact MACs and params of ``arch`` (per sample), computed once per architecture."""
        if arch.arch_id not in self._costs:
            model = build_model(arch, self.space)
            self._costs[arch.arch_id] = count_cost(model, torch.zeros(self.space.input_shape(1)))
        return self._costs[arch.arch_id]

    def violations(self, cost: Cost) -> tuple[float, float]:
        """Optuna constraint values: how far MACs and params exceed the budgets (<= 0: fine)."""
        c = self.config
        over_macs = cost.macs - c.max_flops if c.max_flops else 0.0
        over_params = cost.params - c.max_params if c.max_params else 0.0
        return (float(over_macs), float(over_params))

    # ------------------------------------------------------------------ trial life cycle

    def start(self, trial: optuna.Trial, arch: Architecture) -> bool:
        """Record ``arch`` on ``trial``; return True if it went to the pool for training."""
        cost = self.cost(arch)
        for key, value in (
            ("arch", arch.to_dict()),
            ("arch_id", arch.arch_id),
            ("arch_desc", arch.describe()),
            ("macs", cost.macs),
            ("params", cost.params),
            ("status", "running"),
        ):
            trial.set_user_attr(key, value)
        over_macs, over_params = self.violations(cost)
        trial.set_constraint("macs_over_budget", over_macs)  # NSGA-II/TPE rank it infeasible
        trial.set_constraint("params_over_budget", over_params)
        if max(self.violations(cost)) > 0:
            trial.set_user_attr("status", "infeasible")
            trial.set_user_attr("fail_reason", self._budget_reason(cost))
            self.study.tell(trial, [0.0, float(cost.macs)])
            self._record("infeasible", None, cost.macs, arch)
            return False
        earlier = self.seen.get(arch.arch_id)
        if earlier is not None:
            for key in ("val_acc", "curve", "train_seconds", "threads"):
                trial.set_user_attr(key, earlier.user_attrs.get(key))
            trial.set_user_attr("status", "complete")
            trial.set_user_attr("duplicate_of", earlier.number)
            self.study.tell(trial, list(earlier.values))
            self._record("complete", earlier.user_attrs.get("val_acc"), cost.macs, arch)
            return False
        self._pending[trial.number] = (arch, cost)
        trial.set_user_attr("threads", self.pool.threads)  # accuracy depends on the thread count
        c = self.config
        self.pool.submit(
            trial,
            EvalTask(
                arch_json=arch.to_json(),
                space_source=self.space.source,
                dataset=c.dataset,
                proxy=c.proxy,
                seed=c.seed,
                data_dir=c.data_dir,
                timeout=c.trial_timeout,
            ),
        )
        return True

    def finish(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Record the outcome of a trained trial."""
        arch, cost = self._pending.pop(trial.number)
        trial.set_user_attr("curve", outcome.curve)
        trial.set_user_attr("train_seconds", round(outcome.seconds, 3))
        if outcome.status == "complete":
            trial.set_user_attr("val_acc", outcome.val_acc)
            trial.set_user_attr("status", "complete")
            frozen = self.study.tell(trial, [float(outcome.val_acc), float(cost.macs)])
            self.seen.setdefault(arch.arch_id, frozen)
            self._record("complete", outcome.val_acc, cost.macs, arch)
        else:
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("fail_reason", outcome.reason or "unknown failure")
            self.study.tell(trial, state=TrialState.FAIL)
            self._record("failed", None, None, arch)

    def evaluate(self, arch: Architecture) -> optuna.trial.FrozenTrial:
        """Ask a trial for ``arch``, train it (blocking) and return the recorded trial.

        For strategies that choose architectures themselves (NNI).
        """
        trial = self.study.ask()
        if self.start(trial, arch):
            while True:
                done = self.pool.collect()
                if done:
                    (t, outcome), *_ = done
                    self.finish(t, outcome)
                    break
        return self.study.get_trials(deepcopy=False)[trial.number]

    def _budget_reason(self, cost: Cost) -> str:
        c, parts = self.config, []
        if c.max_flops and cost.macs > c.max_flops:
            parts.append(f"MACs {cost.macs:,} > --max-flops {c.max_flops:,}")
        if c.max_params and cost.params > c.max_params:
            parts.append(f"params {cost.params:,} > --max-params {c.max_params:,}")
        return "over budget, not trained: " + "; ".join(parts)

    def _record(self, status: str, acc: float | None, macs: int | None, arch: Architecture) -> None:
        self._results.append((status, acc, macs))
        if self.on_progress is None:
            return
        ok = [(a, m) for s, a, m in self._results if s == "complete"]
        front = int(pareto_mask([a for a, _ in ok], [m for _, m in ok]).sum()) if ok else 0
        self.on_progress(
            Progress(
                done=len(self._results),
                total=self.total,
                failed=sum(s == "failed" for s, _, _ in self._results),
                infeasible=sum(s == "infeasible" for s, _, _ in self._results),
                best_val_acc=max((a for a, _ in ok), default=None),
                front_size=front,
                last_status=status,
                last_desc=arch.describe(),
            )
        )


def _fail_stale(study: optuna.Study, reason: str) -> int:
    """Mark RUNNING trials (left by a process that ended) as failed; return how many."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "status", "failed")
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        study.tell(t.number, state=TrialState.FAIL)
        n += 1
    return n


def prepare(config: SearchConfig) -> Strategy:
    """Validate dataset and strategy for ``config`` without touching any store."""
    strategy = make_strategy(config.strategy, **config.strategy_options)
    strategy.check(config.space)
    p = config.proxy
    dataset_for(
        config.dataset,
        config.space.source,
        config.data_dir,
        p.val_fraction,
        config.seed,
        p.train_subset,
    )
    return strategy


def open_search(store: Store, config: SearchConfig, strategy: Strategy) -> tuple[optuna.Study, int]:
    """Create the study, or resume it after checking its settings; return it and its done count."""
    sampler = strategy.sampler(config.space, config.seed)
    meta = config.meta()
    if not store.has_search(config.name):
        return store.create_study(config.name, meta, sampler), 0
    study = optuna.load_study(study_name=config.name, storage=store.storage, sampler=sampler)
    old = study.user_attrs[META_KEY]
    before, now = _fingerprint(old), _fingerprint(meta)
    for key in _FINGERPRINT:
        if before[key] != now[key]:
            shown = {
                "space": (old["space_name"], config.space.name),
                "proxy": ("stored settings", "these settings"),
            }.get(key, (before[key], now[key]))
            raise StoreError(
                f"search {config.name!r} exists with a different {key} "
                f"({shown[0]!r}, now {shown[1]!r}); use the same settings to resume, "
                "or another --name"
            )
    _fail_stale(study, "interrupted: the process running this trial ended")
    done = sum(
        t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in study.get_trials(deepcopy=False)
    )
    study.set_user_attr(META_KEY, {**old, "n_trials": max(config.trials, done)})
    return study, done


def run_search(
    config: SearchConfig,
    store: Store | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a search to ``config.trials`` trials; return all its trials.

    ``on_start(done, total)`` is called once the study is open; ``on_progress`` after each trial.
    """
    strategy = prepare(config)
    store = store if store is not None else Store()
    study, done = open_search(store, config, strategy)
    remaining = max(0, config.trials - done)
    if on_start is not None:
        on_start(done, config.trials)
    if remaining:
        pool = ProcessPool(config.workers) if config.workers > 1 else InlinePool()
        session = SearchSession(config, study, pool, config.trials, on_progress)
        try:
            strategy.run(session, remaining)
        except KeyboardInterrupt:
            _fail_stale(study, "interrupted by the user")
            raise
        finally:
            pool.close()
    return trials_frame(study.get_trials(deepcopy=False))
