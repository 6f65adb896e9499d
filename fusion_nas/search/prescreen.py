"""Pre-screen: score K untrained candidates with a zero-cost proxy, keep the best M to train.

:func:`prescreen` draws K distinct architectures of a space uniformly (seeded), costs each with
:func:`fusion_nas.model.cost.arch_cost` (on the ``meta`` device: nothing is allocated), drops those
over the budget (the search's ``--max-flops`` / ``--max-params``: 0 or ``None`` is no limit),
scores the rest with :func:`fusion_nas.search.zero_cost.score_arch` and returns the best M spread
over
the cost range: the head of :func:`fusion_nas.pareto.promotion_order` on (score up, MACs down),
i.e. non-dominated rank first, then crowding distance. Each pick carries its MACs, parameters,
score and scoring seconds, so a search can record why it was chosen.

    batch = zero_cost.train_batch(space, "mnist1d", seed=0)     # TRAIN split only
    picks = prescreen(space, 200, 20, proxy="naswot", batch=batch, seed=0,
                      budget=Budget(max_macs=1_000_000))
    for p in picks: study.enqueue_trial(...p.arch...)
"""

from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass

from fusion_nas.errors import FusionNasError
from fusion_nas.model.arch import Architecture
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.space import SearchSpace
from fusion_nas.pareto import promotion_order
from fusion_nas.search.zero_cost import Batch, check_proxy, score_arch

_KM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
ENUMERATE_LIMIT = 100_000  # spaces up to this size are drawn from their full list
MAX_DRAWS_FACTOR = 50  # draws allowed per wanted architecture before giving up on distinctness
MAX_PRESCREEN = 100_000  # networks one pre-screen may score (about a second each)
BYTES_PER_CANDIDATE = 64 * 1024  # memory one drawn, costed and scored candidate may hold


class PrescreenError(FusionNasError):
    """A bad ``--prescreen`` value (one line, naming it and the allowed form)."""


@dataclass(frozen=True)
class Budget:
    """The search's cost budget (``--max-flops`` / ``--max-params``): ``None`` or 0 is no limit."""

    max_macs: int | None = None
    max_params: int | None = None

    def allows(self, macs: int, params: int) -> bool:
        """Whether a network of ``macs`` and ``params`` fits."""
        over_macs = bool(self.max_macs) and macs > self.max_macs  # type: ignore[operator]
        over_params = bool(self.max_params) and params > self.max_params  # type: ignore[operator]
        return not (over_macs or over_params)


@dataclass(frozen=True)
class Screened:
    """One pre-screened architecture: its cost, its zero-cost score and the scoring time."""

    arch: Architecture
    macs: int
    params: int
    score: float
    seconds: float


@dataclass(frozen=True)
class PrescreenSpec:
    """``--prescreen K:M`` with its proxy: score ``k`` candidates with ``proxy``, queue the best
    ``m``; ``str()`` is ``K:M``."""

    k: int
    m: int
    proxy: str = "naswot"

    def __post_init__(self) -> None:
        if not self.k >= self.m >= 1:
            raise PrescreenError(
                f"bad pre-screen sizes K={self.k}, M={self.m}; allowed: K >= M >= 1"
            )

    def __str__(self) -> str:
        return f"{self.k}:{self.m}"


def max_prescreen(memory_bytes: int | None = None) -> int:
    """The most networks one pre-screen may score: :data:`MAX_PRESCREEN`, fewer where a tenth
    of this machine's memory (``memory_bytes``) cannot hold that many candidates."""
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            memory_bytes = 8 * 2**30
    return max(1, min(MAX_PRESCREEN, memory_bytes // 10 // BYTES_PER_CANDIDATE))


def parse_prescreen(value: str) -> tuple[int, int]:
    """Parse ``"K:M"`` (score K candidates, keep M) with K >= M >= 1; one-line error if not."""
    match = _KM.match(str(value))
    k, m = (int(match[1]), int(match[2])) if match else (0, 0)
    if not match or not k >= m >= 1:
        raise PrescreenError(
            f"bad --prescreen value {value!r}; allowed: K:M with integers K >= M >= 1, e.g. 200:20"
        )
    return k, m


def draw(space: SearchSpace, k: int, seed: int) -> list[Architecture]:
    """K distinct architectures of ``space`` drawn uniformly with ``seed`` (all if K >= its size).

    Small spaces (at most :data:`ENUMERATE_LIMIT`) are drawn from their full list without
    replacement; larger ones as the space's own :meth:`~SearchSpace.sample` draws (same
    ``rng`` calls, so the same architectures), repeats skipped.
    """
    rng = random.Random(seed)
    total = space.product_size()
    if total <= ENUMERATE_LIMIT:
        archs = space.enumerate(ENUMERATE_LIMIT, members=False)
        return archs if k >= total else rng.sample(archs, k)
    # SearchSpace.sample's draw (one rng.choice per stage over its canonical options), with
    # each stage's option list built once instead of once per draw: the same architectures.
    options = [st.options() for st in space.stages]
    out: dict[str, Architecture] = {}
    for _ in range(MAX_DRAWS_FACTOR * k):
        if len(out) == k:
            break
        arch = Architecture(space.name, tuple(rng.choice(o) for o in options))
        out.setdefault(arch.arch_id, arch)
    return list(out.values())


def select(candidates: list[Screened], m: int) -> list[Screened]:
    """The best ``m`` of ``candidates``: the head of ``promotion_order(score, macs)``."""
    order = promotion_order([c.score for c in candidates], [float(c.macs) for c in candidates])
    return [candidates[i] for i in order[:m]]


def prescreen(
    space: SearchSpace,
    k: int,
    m: int,
    *,
    proxy: str,
    batch: Batch,
    seed: int,
    budget: Budget | None = None,
) -> list[Screened]:
    """Score K distinct candidates of ``space`` with ``proxy``; return the best M to train.

    ``batch`` is one ``(x, y)`` batch of TRAIN data
    (:func:`fusion_nas.search.zero_cost.train_batch`);
    ``seed`` draws the candidates and the initial weights they are scored with. Candidates over
    ``budget`` are dropped before scoring, so fewer than M come back when few fit. The picks are
    best first (non-dominated rank on (score up, MACs down), then crowding distance).
    """
    check_proxy(proxy)
    if not k >= m >= 1:
        raise PrescreenError(f"bad pre-screen sizes K={k}, M={m}; allowed: K >= M >= 1")
    if k > max_prescreen():
        raise PrescreenError(
            f"pre-screen K={k:,} is too many networks to score; allowed: K <= {max_prescreen():,}"
        )
    budget = budget or Budget()
    scored: list[Screened] = []
    for arch in draw(space, k, seed):
        cost = arch_cost(arch, space)
        if not budget.allows(cost.macs, cost.params):
            continue
        start = time.perf_counter()
        value = score_arch(arch, space, batch, proxy, seed)
        seconds = time.perf_counter() - start
        scored.append(Screened(arch, cost.macs, cost.params, value, seconds))
    return select(scored, m)
