"""Tables of made-up results (no training) for the table evaluator, fidelity and benchmarks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fusion_nas.evaluation.table import TableRow, append_rows, meta_path
from fusion_nas.model.space import SearchSpace, parse_space
from fusion_nas.training.loop import ProxyConfig
from tests.helpers.spaces import TINY


def noise(key: str) -> float:
    """A fixed number in [0, 1) per key."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32


def plant(
    path: Path,
    space: SearchSpace,
    *,
    dataset: str = "synthetic",
    seeds: tuple[int, ...] = (0, 1),
    proxy: ProxyConfig | None = None,
    skip: int = 0,
) -> dict[str, dict[int, TableRow]]:
    """Write a table of made-up results (no training) for every network but the first ``skip``."""
    rows = []
    for i, arch in enumerate(space.enumerate()):
        if i < skip:
            continue
        macs = 1000 + 937 * i  # made-up costs: the search takes them from the table
        for seed in seeds:
            acc = round(0.3 + 0.6 * noise(f"{arch.arch_id}:{seed}"), 4)
            curve = [round(acc / 2, 4), acc]
            rows.append(
                TableRow(
                    arch.arch_id, arch.to_json(), arch.describe(), macs, 10 * i, seed, acc,
                    curve, 0.5 + seed + i / 100,
                )
            )  # fmt: skip
    append_rows(path, rows)
    meta = {
        "space_toml": space.source,
        "dataset": dataset,
        "proxy": (proxy or ProxyConfig()).to_dict(),
        "seeds": list(seeds),
        "threads": 1,
    }
    meta_path(path).write_text(json.dumps(meta), encoding="utf-8")
    by_arch: dict[str, dict[int, TableRow]] = {}
    for r in rows:
        by_arch.setdefault(r.arch_id, {})[r.seed] = r
    return by_arch


def plant_curves(path: Path, epochs: int = 3) -> dict[str, list[float]]:
    """A table of made-up rising curves over ``epochs`` for every network of TINY; seed 0."""
    space = parse_space(TINY)
    rows, curves = [], {}
    for i, arch in enumerate(space.enumerate()):
        final = 0.3 + 0.6 * noise(arch.arch_id)
        start = 0.1 + 0.5 * noise(arch.arch_id + "start")  # early ranks differ from late ones
        curve = [round(start + (final - start) * (e + 1) / epochs, 4) for e in range(epochs)]
        curves[arch.arch_id] = curve
        rows.append(
            TableRow(
                arch.arch_id, arch.to_json(), arch.describe(), 1000 + 937 * i, 10 * i, 0,
                curve[-1], curve, 3.0,
            )
        )  # fmt: skip
    append_rows(path, rows)
    meta = {
        "space_toml": space.source,
        "dataset": "synthetic",
        "proxy": ProxyConfig(epochs=epochs).to_dict(),
        "seeds": [0],
        "threads": 1,
    }
    meta_path(path).write_text(json.dumps(meta), encoding="utf-8")
    return curves
