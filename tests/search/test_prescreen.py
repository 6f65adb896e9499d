"""Pre-screen: K distinct candidates, the budget, and the promotion order of the picks."""

from __future__ import annotations

import functools
import math
import random

import pytest
import torch

from fusion_nas.errors import FusionNasError
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.space import load_space
from fusion_nas.pareto import pareto_mask, promotion_order
from fusion_nas.search import prescreen as ps
from fusion_nas.search.prescreen import Budget, PrescreenError, draw, parse_prescreen, prescreen
from fusion_nas.search.zero_cost import ProxyError


@functools.cache
def cost_of(arch, space):
    """``arch_cost``, counted once per network (it builds the model on the meta device)."""
    return arch_cost(arch, space)


@pytest.fixture(autouse=True)
def cached_cost(monkeypatch):
    """The pre-screen costs networks with the same (cached) ``arch_cost`` as these tests."""
    monkeypatch.setattr(ps, "arch_cost", cost_of)


def tiny_batch(space, n: int = 8):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, *space.input_shape(1)[1:], generator=gen)
    return x, torch.randint(0, space.classes, (n,), generator=gen)


@pytest.mark.parametrize("value, expected", [("200:20", (200, 20)), (" 5 : 5 ", (5, 5))])
def test_parse_prescreen_reads_k_and_m(value, expected):
    assert parse_prescreen(value) == expected


@pytest.mark.parametrize("value", ["20:200", "0:0", "5:0", "abc", "5", "5:2:1", "-5:2", ""])
def test_parse_prescreen_refuses_bad_values_in_one_line(value):
    with pytest.raises(PrescreenError) as err:
        parse_prescreen(value)
    message = str(err.value)
    assert isinstance(err.value, FusionNasError) and "\n" not in message
    assert repr(value) in message and "K >= M >= 1" in message


def test_draw_is_distinct_seeded_and_covers_a_small_space():
    space = load_space("digits")  # 416 networks: drawn from the full list
    a, b = draw(space, 50, seed=3), draw(space, 50, seed=3)
    assert a == b and len({x.arch_id for x in a}) == 50
    assert draw(space, 50, seed=4) != a
    assert len(draw(space, 10_000, seed=0)) == space.num_architectures()
    big = load_space("mnist1d")  # 1.4 billion: the space's own sampling, repeats skipped
    picks = draw(big, 30, seed=1)
    assert len({x.arch_id for x in picks}) == 30 and picks == draw(big, 30, seed=1)
    assert all(big.validate(x) == x for x in picks)
    # the space's own uniform sampling, draw for draw (no repeats among these first five)
    rng = random.Random(1)
    assert draw(big, 5, seed=1) == [big.sample(rng) for _ in range(5)]


def test_prescreen_returns_m_distinct_networks_within_the_budget():
    space = load_space("digits")
    costs = sorted(cost_of(a, space).macs for a in draw(space, 16, 0))
    budget = Budget(max_macs=costs[len(costs) // 2])  # half the candidates are over it
    picks = prescreen(space, 16, 5, proxy="synflow", batch=tiny_batch(space), seed=0, budget=budget)
    assert len(picks) == 5 and len({p.arch.arch_id for p in picks}) == 5
    for p in picks:
        cost = arch_cost(p.arch, space)
        assert (p.macs, p.params) == (cost.macs, cost.params)
        assert p.macs <= budget.max_macs
        assert math.isfinite(p.score) and p.seconds >= 0


def test_prescreen_never_scores_over_budget_networks(monkeypatch):
    space = load_space("digits")
    scored = []

    def fake(arch, space_, batch, proxy, seed):
        scored.append(arch)
        return 1.0

    monkeypatch.setattr(ps, "score_arch", fake)
    budget = Budget(max_params=6_500)
    prescreen(space, 16, 3, proxy="naswot", batch=tiny_batch(space), seed=0, budget=budget)
    assert scored and all(cost_of(a, space).params <= 6_500 for a in scored)
    over = [a for a in draw(space, 16, 0) if cost_of(a, space).params > 6_500]
    assert over and not {a.arch_id for a in over} & {a.arch_id for a in scored}


def test_the_picks_follow_promotion_order_on_hand_made_scores(monkeypatch):
    space = load_space("digits")
    archs = draw(space, 16, seed=2)
    macs = {a.arch_id: cost_of(a, space).macs for a in archs}
    # Hand-made scores: every other candidate (in draw order) scores its own MACs, so those
    # form one increasing front; the rest score -1 and sit behind it (cheaper ones aside).
    front_ids = {a.arch_id for i, a in enumerate(archs) if i % 2 == 0}
    hand = {a.arch_id: (float(macs[a.arch_id]) if a.arch_id in front_ids else -1.0) for a in archs}
    monkeypatch.setattr(ps, "score_arch", lambda arch, *a, **k: hand[arch.arch_id])
    picks = prescreen(space, 16, 6, proxy="snip", batch=tiny_batch(space), seed=2)
    ids = [p.arch.arch_id for p in picks]
    expected = promotion_order([hand[a.arch_id] for a in archs], [macs[a.arch_id] for a in archs])
    assert ids == [archs[i].arch_id for i in expected[:6]]
    # By hand: the picks are non-dominated, and the first two are the front's cost extremes.
    scores, cost = [hand[i] for i in ids], [macs[i] for i in ids]
    on_front = pareto_mask([hand[a.arch_id] for a in archs], [macs[a.arch_id] for a in archs])
    front = [a.arch_id for a, on in zip(archs, on_front) if on]
    assert set(ids) <= set(front)
    extremes = {min(front, key=lambda i: (macs[i], -hand[i])), max(front, key=lambda i: hand[i])}
    assert set(ids[:2]) == extremes
    assert [p.score for p in picks] == scores and [p.macs for p in picks] == cost


def test_fewer_than_m_come_back_when_few_fit_the_budget():
    space = load_space("digits")
    cheapest = min(cost_of(a, space).macs for a in draw(space, 12, 0))
    picks = prescreen(
        space, 12, 10, proxy="synflow", batch=tiny_batch(space), seed=0,
        budget=Budget(max_macs=cheapest),
    )  # fmt: skip
    assert 1 <= len(picks) < 10 and all(p.macs == cheapest for p in picks)


def test_budget_zero_or_none_is_no_limit():
    assert Budget().allows(10**12, 10**12) and Budget(0, 0).allows(10**12, 10**12)
    assert not Budget(max_macs=5).allows(6, 0) and not Budget(max_params=5).allows(0, 6)
    assert Budget(5, 5).allows(5, 5)


def test_unknown_proxy_and_bad_sizes_are_refused_before_any_work(monkeypatch):
    space = load_space("digits")
    monkeypatch.setattr(ps, "arch_cost", lambda *a: pytest.fail("costed before the check"))
    with pytest.raises(ProxyError, match="'naswot'"):
        prescreen(space, 4, 2, proxy="bogus", batch=tiny_batch(space), seed=0)
    with pytest.raises(PrescreenError, match="K >= M >= 1"):
        prescreen(space, 2, 4, proxy="naswot", batch=tiny_batch(space), seed=0)
