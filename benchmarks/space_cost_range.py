"""Exact cost range of a search space: its cheapest and its most expensive architecture, in
MACs and in parameters, and the median and quantiles of a uniform sample of its architectures.

A stage's cost depends only on its choice and on what enters it (width, spatial size), so a
dynamic programme over those states finds the extremes without enumerating the space. Block and
transition costs are counted by :func:`fusion_nas.model.cost.count_cost` on the meta device, and
every extreme architecture is checked against :func:`fusion_nas.model.cost.arch_cost`. The
median is over ``--samples`` architectures drawn by :meth:`SearchSpace.sample` (uniform over
each stage's choices, seeded; a sample, so the median of that draw, not of the whole space),
costed from the same cached stage costs (a few of them checked against ``arch_cost``). A space's
zoo members (``[zoo] members``) are costed one by one and listed under ``members``; one of them
is an extreme where it is cheaper or dearer than the stage product's. Writes
``benchmarks/results/space_cost_range_<space>.json``.

    python benchmarks/space_cost_range.py --space mnist1d
    python benchmarks/space_cost_range.py --space cifar10 --samples 2000
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import statistics
from pathlib import Path
from typing import Any

import torch

from fusion_nas.model import nets
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.cost import Cost, arch_cost, count_cost
from fusion_nas.model.space import SearchSpace, load_space

RESULTS = Path(__file__).parent / "results"
METRICS = ("macs", "params")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _cost(module: torch.nn.Module, channels: int, size: tuple[int, ...]) -> Cost:
    with torch.device("meta"):
        return count_cost(module, torch.empty(1, channels, *size))


class StageCosts:
    """Cached exact cost of every piece of a network of ``space``: stem, stage, head."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.dim = space.dim
        self.transition = functools.cache(self._transition)
        self.block = functools.cache(self._block)

    def _transition(self, w_in: int, w_out: int, size: tuple[int, ...], down: str) -> Cost:
        with torch.device("meta"):
            module = nets.transition(self.dim, w_in, w_out, down)
        return _cost(module, w_in, size)

    def _block(self, cfg: nets.BlockCfg, size: tuple[int, ...]) -> Cost:
        with torch.device("meta"):
            module = nets.OPS[cfg.operator](cfg, size)
        return _cost(module, cfg.width, size)

    def stem(self) -> tuple[Cost, int, tuple[int, ...]]:
        """The stem's cost (conv with bias, then BN), and the (width, size) it hands on."""
        s, size0 = self.space, self.space.stem_size()
        # a video stem works per frame: a (1, k, k) kernel, as an image stem's (k, k)
        weights = s.channels * s.stem.width * s.stem.kernel ** min(self.dim, 2)
        macs = weights * math.prod(size0)
        params = weights + s.stem.width + 2 * s.stem.width  # conv weights and bias, BN
        return Cost(macs, params), s.stem.width, size0

    def stage(
        self, i: int, c: StageChoice, width: int, size: tuple[int, ...]
    ) -> tuple[Cost, int, tuple[int, ...]]:
        """(cost, width, size) after stage ``i`` with choice ``c``, entered at (width, size)."""
        if c.depth == 0:
            return Cost(0, 0), width, size
        st = self.space.stage_cfg(i, c)
        out = nets.NetCfg(1, size, 2, 1, (st,), 1, 1).stage_sizes()[0]  # stem k1 s1: size kept
        t, b = self.transition(width, c.width, size, st.downsample), self.block(st.block, out)
        return Cost(t.macs + c.depth * b.macs, t.params + c.depth * b.params), c.width, out

    def head(self, width: int) -> Cost:
        """Global pool (no MACs), LayerNorm (2 x width params), Linear to the classes."""
        k = self.space.classes
        return Cost(width * k, 2 * width + width * k + k)

    def arch(self, stages: tuple[StageChoice, ...]) -> Cost:
        """Cost of a whole architecture, from the cached pieces."""
        cost, width, size = self.stem()
        macs, params = cost.macs, cost.params
        for i, c in enumerate(stages):
            cost, width, size = self.stage(i, c, width, size)
            macs, params = macs + cost.macs, params + cost.params
        head = self.head(width)
        return Cost(macs + head.macs, params + head.params)


def _extremes(costs: StageCosts, metric: str) -> dict[str, tuple[int, tuple[StageChoice, ...]]]:
    """The cheapest and the dearest architecture by ``metric`` ("macs" or "params")."""
    space = costs.space
    stem, width0, size0 = costs.stem()
    v0 = getattr(stem, metric)
    # state (width, size) -> ((min, choices), (max, choices))
    states: dict[Any, Any] = {(width0, size0): ((v0, ()), (v0, ()))}
    for i, spec in enumerate(space.stages):
        new: dict[Any, Any] = {}
        for (width, size), (lo, hi) in states.items():
            for c in spec.iter_options():
                cost, w, out = costs.stage(i, c, width, size)
                v = getattr(cost, metric)
                a, b = (lo[0] + v, (*lo[1], c)), (hi[0] + v, (*hi[1], c))
                old = new.get((w, out))
                if old is not None:
                    a = min(old[0], a, key=lambda t: t[0])
                    b = max(old[1], b, key=lambda t: t[0])
                new[(w, out)] = (a, b)
        states = new
    head = {key: getattr(costs.head(key[0]), metric) for key in states}
    lo = min(((v[0][0] + head[k], v[0][1]) for k, v in states.items()), key=lambda t: t[0])
    hi = max(((v[1][0] + head[k], v[1][1]) for k, v in states.items()), key=lambda t: t[0])
    return {"min": lo, "max": hi}


def _entry(space: SearchSpace, stages: tuple[StageChoice, ...]) -> dict[str, Any]:
    arch = space.validate(Architecture(space.name, stages))
    cost = arch_cost(arch, space)
    return {
        "macs": cost.macs,
        "params": cost.params,
        "arch": arch.describe(),
        "arch_id": arch.arch_id,
        "json": arch.to_dict(),
    }


def _quantile(values: list[int], q: float) -> int:
    """The ``q`` quantile of sorted ``values`` (nearest rank)."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def sampled(
    space: SearchSpace, costs: StageCosts, samples: int, seed: int = 0, check: int = 5
) -> dict[str, Any]:
    """Median and quantiles of MACs and params over ``samples`` uniformly drawn architectures;
    the first ``check`` are recounted by :func:`arch_cost`."""
    rng = random.Random(seed)
    rows = []
    for n in range(samples):
        arch = space.sample(rng)
        cost = costs.arch(arch.stages)
        if n < check:
            exact = arch_cost(arch, space)
            assert (cost.macs, cost.params) == (exact.macs, exact.params), (arch, cost, exact)
        rows.append(cost)
    out: dict[str, Any] = {"samples": samples, "seed": seed}
    for metric in METRICS:
        values = sorted(getattr(c, metric) for c in rows)
        out[f"median_{metric}"] = int(statistics.median(values))
        out[f"{metric}_quantiles"] = {str(q): _quantile(values, q) for q in QUANTILES}
    out["share_under_100k_params"] = round(sum(c.params < 100_000 for c in rows) / samples, 4)
    out["share_under_20M_macs"] = round(sum(c.macs <= 20_000_000 for c in rows) / samples, 4)
    return out


def cost_range(space: SearchSpace, samples: int = 0, seed: int = 0) -> dict[str, Any]:
    """Cheapest and most expensive architecture of ``space`` by MACs (``min``, ``max``) and by
    parameters (``min_params``, ``max_params``), exactly; with ``samples`` > 0 also the sampled
    median and quantiles (``sampled``)."""
    costs = StageCosts(space)
    out: dict[str, Any] = {"space": space.name, "architectures": space.num_architectures()}
    for metric in METRICS:
        for name, (value, stages) in _extremes(costs, metric).items():
            entry = _entry(space, stages)
            assert entry[metric] == value, (metric, name, entry[metric], value)
            out[name if metric == "macs" else f"{name}_params"] = entry
    members = [_member_entry(space, arch) for arch in space.members()]
    if members:  # the zoo members belong to the space too: they may be its extremes
        for metric in METRICS:
            for name, pick in (("min", min), ("max", max)):
                key = name if metric == "macs" else f"{name}_params"
                out[key] = pick([out[key], *members], key=lambda e, m=metric: e[m])
        out["members"] = members
    if samples:
        out["sampled"] = sampled(space, costs, samples, seed)
    return out


def _member_entry(space: SearchSpace, arch: Architecture) -> dict[str, Any]:
    """A zoo member of ``space`` (``[zoo] members``) as an extreme's entry."""
    cost = arch_cost(arch, space)
    return {
        "member": arch.base,
        "macs": cost.macs,
        "params": cost.params,
        "arch": arch.describe(),
        "arch_id": arch.arch_id,
        "json": arch.to_dict(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure one space and write its JSON; returns it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mnist1d", help="built-in name or .toml path")
    parser.add_argument("--samples", type=int, default=1000, help="architectures for the median")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    space = load_space(args.space)
    result = cost_range(space, args.samples, args.seed)
    out = args.out or RESULTS / f"space_cost_range_{space.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{space.name}: {result['architectures']:,} architectures")
    for name in ("min", "max", "min_params", "max_params"):
        r = result[name]
        print(f"  {name}: {r['macs']:,} MACs, {r['params']:,} params  {r['arch']}")
    if args.samples:
        s = result["sampled"]
        print(
            f"  median of {s['samples']} sampled: {s['median_macs']:,} MACs, "
            f"{s['median_params']:,} params; under 100k params: {s['share_under_100k_params']:.0%}"
            f", at most 20M MACs: {s['share_under_20M_macs']:.0%}"
        )
    return result


if __name__ == "__main__":
    main()
