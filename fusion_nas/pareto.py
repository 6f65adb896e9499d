"""Pareto analysis over (validation accuracy up, MACs down).

- :func:`pareto_mask`: non-dominated points; of exact duplicates only the first counts.
- :func:`hypervolume`: 2-D area dominated by the front in (accuracy, log10 MACs) space, up to
  the reference point ``(accuracy = 0, MACs = ref_macs)``. The default reference is
  :func:`default_ref_macs` of the points given; to compare searches pass one shared
  ``ref_macs`` (:func:`fusion_nas.store.queries.reference_macs` over all of them). Larger is better.
- :func:`promotion_order`: non-dominated rank first, then crowding distance (NSGA-II's order);
  successive halving promotes and the pre-screen keeps the head of it.
- :func:`knee_index`: the front point farthest from the straight line between the front's two
  extremes, after scaling accuracy and log10 MACs to [0, 1]; the usual "best trade-off" pick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pareto_mask(acc: Sequence[float], macs: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points no other point dominates (higher acc and lower MACs)."""
    a = np.asarray(acc, dtype=float)
    m = np.asarray(macs, dtype=float)
    # Sort by MACs ascending, then accuracy descending: a point is on the front iff its
    # accuracy beats every cheaper (or equally cheap, earlier-sorted) point's accuracy.
    order = np.lexsort((-a, m))
    mask = np.zeros(len(a), dtype=bool)
    best = -math.inf
    for i in order:
        if a[i] > best:
            mask[i] = True
            best = a[i]
    return mask


def front_indices(acc: Sequence[float], macs: Sequence[float]) -> list[int]:
    """Indices of the front, ordered by MACs ascending (accuracy ascending along it)."""
    mask = pareto_mask(acc, macs)
    return sorted(np.flatnonzero(mask).tolist(), key=lambda i: (macs[i], -acc[i]))


def default_ref_macs(macs: Sequence[float]) -> float:
    """The reference-MACs rule: 10x the largest MACs (1 for an empty set)."""
    return 10.0 * max(macs) if len(macs) else 1.0


def hypervolume(
    acc: Sequence[float], macs: Sequence[float], ref_macs: float | None = None
) -> float:
    """Area dominated by the front in (accuracy, log10 MACs) space up to ``(0, ref_macs)``."""
    if len(acc) == 0:
        return 0.0
    ref = math.log10(ref_macs if ref_macs is not None else default_ref_macs(macs))
    area = 0.0
    idx = front_indices(acc, macs)
    # Walk from the most expensive (most accurate) front point to the cheapest.
    for pos in range(len(idx) - 1, -1, -1):
        i = idx[pos]
        right = ref if pos == len(idx) - 1 else math.log10(max(macs[idx[pos + 1]], 1.0))
        left = math.log10(max(macs[i], 1.0))
        width = max(0.0, min(right, ref) - left)
        area += width * max(0.0, acc[i])
        # Points beyond the next front point are covered by the staircase step of that point.
    return area


def knee_index(acc: Sequence[float], macs: Sequence[float]) -> int | None:
    """Index (into the inputs) of the knee point of the front, or ``None`` for no points."""
    idx = front_indices(acc, macs)
    if not idx:
        return None
    if len(idx) <= 2:
        return idx[-1]  # two points: take the more accurate one
    x = np.array([math.log10(max(macs[i], 1.0)) for i in idx])
    y = np.array([acc[i] for i in idx])
    x = (x - x.min()) / (np.ptp(x) or 1.0)
    y = (y - y.min()) / (np.ptp(y) or 1.0)
    # Distance of each point to the line through the first and last front point.
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    dist = np.abs(dy * (x - x[0]) - dx * (y - y[0])) / (math.hypot(dx, dy) or 1.0)
    return idx[int(np.argmax(dist))]


def nondominated_ranks(acc: Sequence[float], macs: Sequence[float]) -> list[int]:
    """Front number of every point (0: the Pareto front, 1: the front once 0 is removed, ...)."""
    remaining = list(range(len(acc)))
    ranks = [0] * len(acc)
    rank = 0
    while remaining:
        mask = pareto_mask([acc[i] for i in remaining], [macs[i] for i in remaining])
        for i, on in zip(remaining, mask, strict=True):
            if on:
                ranks[i] = rank
        remaining = [i for i, on in zip(remaining, mask, strict=True) if not on]
        rank += 1
    return ranks


def crowding_distances(acc: Sequence[float], macs: Sequence[float]) -> list[float]:
    """NSGA-II crowding distance of each point within the set given (one front).

    Per objective (accuracy, log10 MACs) the points are sorted; the two extremes get infinity
    and every other point the gap between its neighbours divided by the objective's range.
    """
    n = len(acc)
    dist = [0.0] * n
    if n == 0:
        return dist
    for values in (list(acc), [math.log10(max(m, 1.0)) for m in macs]):
        order = sorted(range(n), key=lambda i: (values[i], i))
        span = values[order[-1]] - values[order[0]]
        dist[order[0]] = dist[order[-1]] = math.inf
        for pos in range(1, n - 1):
            if span > 0:
                dist[order[pos]] += (values[order[pos + 1]] - values[order[pos - 1]]) / span
    return dist


def promotion_order(acc: Sequence[float], macs: Sequence[float]) -> list[int]:
    """Indices best first: lower non-dominated rank, then larger crowding distance, then index.

    Crowding is measured within each rank, so among equally good points the ones that spread
    the front over the cost range come first (ties: the earlier point).
    """
    ranks = nondominated_ranks(acc, macs)
    crowd = [0.0] * len(acc)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, d in zip(
            members,
            crowding_distances([acc[i] for i in members], [macs[i] for i in members]),
            strict=True,
        ):
            crowd[i] = d
    return sorted(range(len(acc)), key=lambda i: (ranks[i], -crowd[i], i))
