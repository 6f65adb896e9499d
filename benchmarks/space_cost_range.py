"""Exact MAC range of a search space: its cheapest and its most expensive architecture.

A stage's cost depends only on its choice and on what enters it (width, spatial size), so a
dynamic programme over those states finds both extremes without enumerating the space. Block and
transition costs are counted by :func:`fusion_nas.model.cost.count_cost` on the meta device, and the
two extreme architectures are checked against :func:`fusion_nas.model.cost.arch_cost`. Writes
``benchmarks/results/space_cost_range_<space>.json``.

    python benchmarks/space_cost_range.py --space mnist1d
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path

import torch

from fusion_nas.model import nets
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.cost import arch_cost, count_cost
from fusion_nas.model.space import SearchSpace, load_space

RESULTS = Path(__file__).parent / "results"


def _macs(module: torch.nn.Module, channels: int, size: tuple[int, ...]) -> int:
    with torch.device("meta"):
        return count_cost(module, torch.empty(1, channels, *size)).macs


def cost_range(space: SearchSpace) -> dict:
    """Cheapest and most expensive architecture of ``space`` with their exact MACs."""
    dim = space.dim

    @functools.cache
    def transition(w_in: int, w_out: int, size: tuple[int, ...], down: str) -> int:
        with torch.device("meta"):
            module = nets.transition(dim, w_in, w_out, down)
        return _macs(module, w_in, size)

    @functools.cache
    def block(cfg: nets.BlockCfg, size: tuple[int, ...]) -> int:
        with torch.device("meta"):
            module = nets.OPS[cfg.operator](cfg, size)
        return _macs(module, cfg.width, size)

    def stage(i: int, c: StageChoice, width: int, size: tuple[int, ...]):
        """(MACs, width, size) after stage ``i`` with choice ``c``, entered at (width, size)."""
        if c.depth == 0:
            return 0, width, size
        st = space.stage_cfg(i, c)
        out = nets.NetCfg(1, size, 2, 1, (st,), 1, 1).stage_sizes()[0]  # stem k1 s1: size kept
        macs = transition(width, c.width, size, st.downsample) + c.depth * block(st.block, out)
        return macs, c.width, out

    size0 = space.stem_size()
    stem = space.channels * space.stem.width * space.stem.kernel**dim * math.prod(size0)
    # state (width, size) -> ((min MACs, choices), (max MACs, choices))
    states = {(space.stem.width, size0): ((stem, ()), (stem, ()))}
    for i, spec in enumerate(space.stages):
        new: dict = {}
        for (width, size), (lo, hi) in states.items():
            for c in spec.iter_options():
                macs, w, out = stage(i, c, width, size)
                a, b = (lo[0] + macs, (*lo[1], c)), (hi[0] + macs, (*hi[1], c))
                old = new.get((w, out))
                if old is not None:
                    a = min(old[0], a, key=lambda t: t[0])
                    b = max(old[1], b, key=lambda t: t[0])
                new[(w, out)] = (a, b)
        states = new
    head = {key: key[0] * space.classes for key in states}
    lo = min(((v[0][0] + head[k], v[0][1]) for k, v in states.items()), key=lambda t: t[0])
    hi = max(((v[1][0] + head[k], v[1][1]) for k, v in states.items()), key=lambda t: t[0])
    out = {"space": space.name, "architectures": space.num_architectures()}
    for name, (macs, stages) in (("min", lo), ("max", hi)):
        arch = space.validate(Architecture(space.name, stages))
        cost = arch_cost(arch, space)
        assert cost.macs == macs, (name, cost.macs, macs)
        out[name] = {
            "macs": macs,
            "params": cost.params,
            "arch": arch.describe(),
            "arch_id": arch.arch_id,
            "json": arch.to_dict(),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mnist1d")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    space = load_space(args.space)
    result = cost_range(space)
    out = args.out or RESULTS / f"space_cost_range_{space.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{space.name}: {result['architectures']:,} architectures")
    for name in ("min", "max"):
        r = result[name]
        print(f"  {name}: {r['macs']:,} MACs, {r['params']:,} params  {r['arch']}")


if __name__ == "__main__":
    main()
