"""Pareto front, hypervolume and knee point against brute force and hand-computed values."""

from __future__ import annotations

import math
import random

import pytest

from fusion_nas.pareto import front_indices, hypervolume, knee_index, pareto_mask


def brute_front(acc, macs) -> set[int]:
    front = set()
    for i in range(len(acc)):
        dominated = any(
            (acc[j] >= acc[i] and macs[j] <= macs[i] and (acc[j] > acc[i] or macs[j] < macs[i]))
            for j in range(len(acc))
        )
        duplicate_earlier = any(acc[j] == acc[i] and macs[j] == macs[i] for j in range(i))
        if not dominated and not duplicate_earlier:
            front.add(i)
    return front


@pytest.mark.parametrize("seed", range(20))
def test_mask_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    acc = [rng.choice([0.1, 0.5, 0.7, 0.9, rng.random()]) for _ in range(n)]
    macs = [rng.choice([10, 100, 1000, rng.randint(1, 5000)]) for _ in range(n)]
    assert set(map(int, pareto_mask(acc, macs).nonzero()[0])) == brute_front(acc, macs)


def test_front_order_hypervolume_and_knee_by_hand() -> None:
    acc = [0.5, 0.7, 0.6, 0.9, 0.9]
    macs = [10, 100, 200, 1000, 1000]
    assert front_indices(acc, macs) == [0, 1, 3]  # 2 dominated by 1; 4 duplicates 3
    # Staircase in (acc, log10 MACs) up to (0, 10^4): 0.9*(4-3) + 0.7*(3-2) + 0.5*(2-1)
    assert hypervolume(acc, macs, ref_macs=10_000) == pytest.approx(2.1)
    assert knee_index(acc, macs) == 1
    assert hypervolume([], []) == 0.0 and knee_index([], []) is None


def test_hypervolume_grows_with_a_new_front_point_and_ignores_dominated_ones() -> None:
    acc, macs = [0.5, 0.8], [100, 1000]
    base = hypervolume(acc, macs, ref_macs=1e5)
    assert hypervolume([*acc, 0.4], [*macs, 500], ref_macs=1e5) == pytest.approx(base)
    assert hypervolume([*acc, 0.7], [*macs, 300], ref_macs=1e5) > base
    # default reference: 10x the largest MACs
    assert hypervolume(acc, macs) == pytest.approx(0.8 * 1 + 0.5 * 1)
    assert math.isclose(hypervolume([0.9], [50], ref_macs=50), 0.0)
