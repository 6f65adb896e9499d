"""What defines a search (:class:`SearchConfig`), its checks, and the settings a resume must keep.

The evaluator, the fidelity and the pre-screen arrive as the CLI's strings (``table:PATH[@SEED]``,
``sh:1,3,10/3``, ``K:M``) or as typed values; :class:`SearchConfig` parses them once and holds
the typed values (:class:`TableSpec`, :class:`~fusion_nas.search.fidelity.SuccessiveHalving`,
:class:`~fusion_nas.search.prescreen.PrescreenSpec`). They become strings again only in the
stored :class:`~fusion_nas.store.records.SearchRecord`, in the format stores already hold.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fusion_nas import settings
from fusion_nas.errors import FusionNasError, ResourceError, StoreError, allowed
from fusion_nas.evaluation.table import parse_evaluator
from fusion_nas.model.space import SearchSpace, parse_space
from fusion_nas.search.fidelity import SuccessiveHalving, parse_fidelity
from fusion_nas.store import records
from fusion_nas.store.records import SearchRecord
from fusion_nas.training.augment import check_augment, default_augment
from fusion_nas.training.devices import parse_device
from fusion_nas.training.loop import ProxyConfig

if TYPE_CHECKING:  # the pre-screen (zero-cost proxies, torch) is imported only when used
    from fusion_nas.search.prescreen import PrescreenSpec

# Settings that must match when a search is resumed: they decide what a trial's score means.
_FINGERPRINT = (
    "space",
    "dataset",
    "proxy",
    "strategy",
    "seed",
    "max_flops",
    "max_params",
    "evaluator",
    "fidelity",
    "objectives",
    "max_latency_ms",
)
OBJECTIVE_CHOICES = ("macs", "latency")
# The strategy of a new search that names none: on both tabular benchmarks TPE reached 0.95 of
# the true hypervolume in the fewest trials and distinct networks (README, "Search efficiency";
# Optuna 5 made it its default multi-objective sampler). A search records its strategy, so an
# older search (NSGA-II was the default before) resumes with the strategy it began with.
DEFAULT_STRATEGY = "optuna:tpe"
MAX_WORKERS = 256  # more --workers than this is refused: each is a process with its own data
WORKERS_PER_CORE = 4  # --workers is capped at this many per CPU core (and at --trials)
ZERO_COST_PROXIES = ("naswot", "synflow", "grad_norm", "snip")  # search.zero_cost.PROXIES
NO_QUEUE_STRATEGIES = ("optuna:grid",)  # Optuna strategies that cannot take queued trials
LATENCY_CHOICES = ("eager", "all", "off")


@dataclass(frozen=True)
class TableSpec:
    """A table evaluator: the table's CSV (absolute) and the seed whose rows answer (``None``:
    the mean over the table's seeds); ``str()`` is the stored ``table:PATH[@SEED]``."""

    path: Path
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser().resolve())

    def __str__(self) -> str:
        return f"table:{self.path}" + (f"@{self.seed}" if self.seed is not None else "")


Evaluator = TableSpec | Literal["train"]


def parse_table_spec(value: str | TableSpec) -> Evaluator:
    """``"train"``, or the :class:`TableSpec` of ``table:PATH[@SEED]`` (one-line error if
    neither)."""
    if isinstance(value, TableSpec):
        return value
    spec = parse_evaluator(value)
    if spec.kind == "table":
        assert spec.path is not None
        return TableSpec(spec.path, spec.seed)
    return "train"


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search.

    ``evaluator``, ``fidelity`` and ``prescreen`` accept the CLI's strings; after construction
    they hold the parsed values (see the field comments).
    """

    name: str
    space: SearchSpace
    dataset: str
    # None: DEFAULT_STRATEGY for a new search; a resumed search keeps its stored strategy and
    # options (fusion_nas.search.session.settle_strategy).
    strategy: str | None = None
    trials: int = 20
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    seed: int = 0
    max_flops: int | None = None
    max_params: int | None = None
    trial_timeout: float | None = None
    workers: int = 1
    data_dir: str | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)
    # "train" (proxy-train every trial) or a TableSpec, from "table:PATH[@SEED]" (look trials
    # up in a table made by benchmarks/tabular.py; see fusion_nas.evaluation.table). Stored
    # with the path made absolute.
    evaluator: Evaluator | str = "train"
    # Where trials train: "auto", "cpu", "cuda", "cuda:N" or "mps" (fusion_nas.training.devices).
    # Not in the resume fingerprint: a search may go on on another machine's device.
    device: str = "auto"
    # Trials trained at once on each GPU (CUDA only): workers = GPUs x N at least. Not stored.
    trials_per_device: int | None = None  # None: as `workers` says
    # None (every trial trains the whole proxy; from "full") or a SuccessiveHalving schedule,
    # from "sh[:E1,E2,...][/ETA]" (fusion_nas.search.fidelity); stored normalised, e.g.
    # "sh:1,3,10/3".
    fidelity: SuccessiveHalving | str | None = "full"
    # A PrescreenSpec, from "K:M" and `prescreen_proxy`: score K untrained candidates with the
    # zero-cost proxy and queue the best M (spread over the cost range) as the search's first
    # trials (fusion_nas.search.prescreen).
    prescreen: PrescreenSpec | str | None = None
    prescreen_proxy: str = "naswot"
    # The second objective: "macs" (counted) or "latency" (median batch-1 milliseconds of the
    # model, measured on this machine in one thread: fusion_nas.deploy.latency), and its budget.
    objective: str = "macs"
    max_latency_ms: float | None = None
    # Which latencies every trial records: "eager" (torch, batch 1 and 64), "all" (also
    # onnxruntime, about 4 s more per network here), "off" (only when the objective or
    # the budget needs it). Table searches default to "off" (None: the evaluator decides).
    latency: str | None = None
    # Zoo members of the space (its [zoo] members, fusion_nas.model.zoo) queued as the first
    # trials of a new search, from "NAME,NAME"; a resumed search does not queue them again.
    # Not stored in the search record: each queued trial says so (fusion_nas.search.start).
    start_from: tuple[str, ...] | str | None = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluator", parse_table_spec(self.evaluator))
        object.__setattr__(self, "fidelity", _halving(self.fidelity, self.proxy.epochs))
        object.__setattr__(self, "device", parse_device(self.device))
        check_augment(self.proxy, self.space.kind)  # crop, flip, cutout: images only
        if not self.name or not isinstance(self.name, str) or len(self.name) > 200:
            raise FusionNasError(f"search name {self.name!r} must be 1 to 200 characters")
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in self.name):  # Unicode category Cc
            raise FusionNasError(f"search name {self.name!r} has control characters (CR, NUL)")
        if self.trials < 1:
            raise FusionNasError(f"--trials must be at least 1, got {self.trials}")
        object.__setattr__(self, "workers", cap_workers(self.workers, self.trials))
        for flag, value in (("--max-flops", self.max_flops), ("--max-params", self.max_params)):
            if value is not None and value <= 0:
                raise FusionNasError(f"{flag} must be positive, got {value}")
        if self.trial_timeout is not None and not (
            math.isfinite(self.trial_timeout) and self.trial_timeout > 0
        ):
            raise FusionNasError(
                f"--trial-timeout must be positive, got {self.trial_timeout}; allowed: a "
                "finite number of seconds > 0"
            )
        if self.prescreen_proxy not in ZERO_COST_PROXIES:  # checked with or without --prescreen
            raise FusionNasError(
                f"unknown --zero-cost proxy {self.prescreen_proxy!r}; "
                f"allowed: {allowed(ZERO_COST_PROXIES)}"
            )
        if self.objective not in OBJECTIVE_CHOICES:
            raise FusionNasError(
                f"unknown --objective {self.objective!r}; allowed: {', '.join(OBJECTIVE_CHOICES)}"
            )
        if self.max_latency_ms is not None and not (
            math.isfinite(self.max_latency_ms) and self.max_latency_ms > 0
        ):
            raise FusionNasError(
                f"--max-latency-ms must be positive, got {self.max_latency_ms}; allowed: a "
                "finite number of milliseconds > 0"
            )
        if self.latency is None:
            default = "off" if self.table is not None else "eager"
            object.__setattr__(self, "latency", settings.default_latency() or default)
        if self.latency not in LATENCY_CHOICES:
            raise FusionNasError(
                f"unknown --latency {self.latency!r}; allowed: {', '.join(LATENCY_CHOICES)}"
            )
        object.__setattr__(self, "start_from", _start_from(self.start_from, self.space))
        if len(self.start_from) > self.trials:
            raise FusionNasError(
                f"--start-from names {len(self.start_from)} networks, more than --trials "
                f"{self.trials}; allowed: at most --trials"
            )
        if self.prescreen is not None:
            k, m, proxy = _prescreen(self.prescreen, self.prescreen_proxy)
            if self.strategy in NO_QUEUE_STRATEGIES:
                raise FusionNasError(
                    f"--prescreen cannot queue networks for --strategy {self.strategy!r} (it "
                    "tries a fixed grid); allowed: --prescreen with any other optuna strategy, "
                    "or this strategy without --prescreen"
                )
            k = cap_prescreen(k, self.space)
            m = min(m, k)
            if m > self.trials:
                raise FusionNasError(
                    f"--prescreen {self.prescreen}: M={m} trials to queue, more than "
                    f"--trials {self.trials}; allowed: M <= --trials"
                )
            from fusion_nas.search.prescreen import PrescreenSpec
            from fusion_nas.search.zero_cost import check_proxy

            spec = PrescreenSpec(k, m, check_proxy(proxy))
            object.__setattr__(self, "prescreen", spec)
            object.__setattr__(self, "prescreen_proxy", spec.proxy)

    def record(self) -> SearchRecord:
        """The search record stored with the study (the typed settings as their strings)."""
        from fusion_nas._version import __version__

        screen = self.screening
        return SearchRecord(
            space_name=self.space.name,
            space_toml=self.space.source,
            dataset=self.dataset,
            proxy=self.proxy.to_dict(),
            strategy=self.strategy or DEFAULT_STRATEGY,
            seed=self.seed,
            n_trials=self.trials,
            data_dir=self.data_dir,
            strategy_options=dict(self.strategy_options),
            max_flops=self.max_flops,
            max_params=self.max_params,
            trial_timeout=self.trial_timeout,
            workers=self.workers,
            version=__version__,
            evaluator=str(self.evaluator),
            fidelity=str(self.halving) if self.halving is not None else "full",
            prescreen=f"{screen}:{screen.proxy}" if screen is not None else None,
            objectives=records.objectives_for(self.objective),
            max_latency_ms=self.max_latency_ms,
        )

    @property
    def measures_latency(self) -> bool:
        """Whether each trial's latency is measured (asked for, or needed)."""
        needed = self.objective == "latency" or self.max_latency_ms is not None
        return self.latency != "off" or needed

    @property
    def table(self) -> TableSpec | None:
        """The table that answers the trials, or ``None`` when they are trained."""
        return self.evaluator if isinstance(self.evaluator, TableSpec) else None

    @property
    def halving(self) -> SuccessiveHalving | None:
        """The successive-halving schedule, or ``None`` for full-fidelity trials."""
        assert self.fidelity is None or isinstance(self.fidelity, SuccessiveHalving)
        return self.fidelity

    @property
    def screening(self) -> PrescreenSpec | None:
        """The pre-screen (``--prescreen``), or ``None`` without one."""
        assert self.prescreen is None or not isinstance(self.prescreen, str)
        return self.prescreen


def _start_from(value: tuple[str, ...] | str | None, space: SearchSpace) -> tuple[str, ...]:
    """``--start-from``'s names (``"a,b"`` or a sequence), each a zoo member of ``space``."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    members = space.zoo_members
    for name in names or ("",):
        if name not in members:
            held = allowed(members) if members else "none (the space lists no [zoo] members)"
            raise FusionNasError(
                f"--start-from {name!r} is not a zoo member of space {space.name!r}; "
                f"allowed: {held}"
            )
    return names


def cap_workers(workers: int, trials: int, cores: int | None = None) -> int:
    """``--workers`` as run: at most ``trials`` and :data:`WORKERS_PER_CORE` per core
    (``cores``: this machine's); below 1 or above :data:`MAX_WORKERS` is refused in one line."""
    if not 1 <= workers <= MAX_WORKERS:
        what = "must be at least 1, got" if workers < 1 else "is too many processes:"
        raise ResourceError(
            f"--workers {what} {workers}; allowed: 1..{MAX_WORKERS} (capped at --trials and "
            f"{WORKERS_PER_CORE} per CPU core)"
        )
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(workers, trials, WORKERS_PER_CORE * cores))


def cap_prescreen(k: int, space: SearchSpace) -> int:
    """``--prescreen`` K as run: at most the networks of ``space``; above the memory-bounded
    :data:`~fusion_nas.search.prescreen.MAX_PRESCREEN` is refused in one line."""
    from fusion_nas.search.prescreen import max_prescreen

    limit = max_prescreen()
    if k > limit:
        raise ResourceError(
            f"--prescreen K={k:,} networks to score is too many for this machine; "
            f"allowed: K <= {limit:,} (capped at the space's size)"
        )
    return min(k, space.product_size())


def _halving(value: SuccessiveHalving | str | None, epochs: int) -> SuccessiveHalving | None:
    """The schedule of ``value`` (checked against the proxy's ``epochs``), or ``None``."""
    if isinstance(value, SuccessiveHalving):  # checked as its stored string would be
        value = str(value)
    return parse_fidelity(value, epochs)


def _prescreen(value: PrescreenSpec | str, proxy: str) -> tuple[int, int, str]:
    """``(K, M, proxy)`` of ``value``: a spec, or ``K:M`` (one-line error if not) and ``proxy``."""
    from fusion_nas.search.prescreen import PrescreenSpec, parse_prescreen

    if isinstance(value, PrescreenSpec):
        return value.k, value.m, value.proxy
    k, m = parse_prescreen(value)
    return k, m, proxy


def _fingerprint(record: SearchRecord) -> dict[str, Any]:
    """What must match on resume; the space as parsed (formatting and description aside)."""
    space = parse_space(record.space_toml, source="<stored space>")
    fields = [f.name for f in dataclasses.fields(space) if f.name not in ("source", "description")]
    return {
        "space": {name: getattr(space, name) for name in fields},
        "dataset": record.dataset,
        # An older search's `bf16` flag is its precision, a setting it predates its old value;
        # channels-last and compile are left out.
        "proxy": stored_proxy(record.proxy, record.dataset).fingerprint(),
        "strategy": record.strategy,
        "seed": record.seed,
        "max_flops": record.max_flops,
        "max_params": record.max_params,
        "evaluator": record.evaluator,
        "fidelity": record.fidelity,
        "objectives": list(record.objectives),
        "max_latency_ms": record.max_latency_ms,
    }


def stored_proxy(stored: dict[str, Any], dataset: str) -> ProxyConfig:
    """A stored proxy dict as the settings it trained with: a key stored before its setting
    existed means that setting's old value (:meth:`ProxyConfig.from_dict`), and augmentation
    ``None`` the dataset's default."""
    return ProxyConfig.from_dict(stored).settled(dataset)


def settle_proxy(config: SearchConfig, old: SearchRecord | None) -> SearchConfig:
    """``config`` with its augmentation settled when it names none (``augment=None``): the
    stored search's (an old search resumes as it trained) or, for a new search, the dataset's
    default (:func:`~fusion_nas.training.augment.default_augment`); stored explicitly."""
    if config.proxy.augment is not None:
        return config
    augment = stored_proxy(old.proxy, old.dataset).augment if old is not None else None
    augment = augment or default_augment(config.dataset)
    return dataclasses.replace(config, proxy=dataclasses.replace(config.proxy, augment=augment))


def _check_resume(name: str, old: SearchRecord, new: SearchRecord) -> None:
    """Refuse (one line) to resume ``name`` with settings that change what a score means."""
    before, now = _fingerprint(old), _fingerprint(new)
    for key in _FINGERPRINT:
        if before[key] != now[key]:
            shown = {
                "space": (old.space_name, new.space_name),
                "proxy": ("stored settings", "these settings"),
            }.get(key, (before[key], now[key]))
            raise StoreError(
                f"search {name!r} exists with a different {key} "
                f"({shown[0]!r}, now {shown[1]!r}); use the same settings to resume, "
                "or another --name"
            )
