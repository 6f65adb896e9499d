"""Zero-cost proxies: deterministic, finite on every operator, sane, and side-effect free."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fusion_nas.errors import FusionNasError
from fusion_nas.model.build import build_model
from fusion_nas.model.space import load_space
from fusion_nas.search.zero_cost import PROXIES, ProxyError, score, score_arch, train_batch
from tests.helpers.op_configs import op_configs

CLASSES = 3


def wrapped(cfg) -> nn.Module:
    """A small network around one operator: conv stem -> BN -> GELU -> op -> pool -> linear."""
    dim = cfg.dim
    conv = (nn.Conv1d, nn.Conv2d)[dim - 1](2, cfg.channels, 3, padding=1)
    bn = (nn.BatchNorm1d, nn.BatchNorm2d)[dim - 1](cfg.channels)
    pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)[dim - 1](1)
    return nn.Sequential(
        conv, bn, nn.GELU(), cfg.build(), pool, nn.Flatten(), nn.Linear(cfg.channels, CLASSES)
    )


def batch_for(shape: tuple[int, ...], n: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)


OPS = op_configs()


@pytest.mark.parametrize("cfg", OPS, ids=[c.id for c in OPS])
def test_every_proxy_is_finite_on_every_operator_and_variant(cfg):
    torch.manual_seed(0)
    model = wrapped(cfg)
    batch = batch_for((2, *cfg.size))
    values = {p: score(model, batch, p, seed=0) for p in PROXIES}
    assert all(math.isfinite(v) for v in values.values()), values
    # the gradient proxies see every branch: a zero would mean the operator was not scored
    assert values["snip"] > 0 and values["grad_norm"] > 0 and values["synflow"] > 0


@pytest.mark.parametrize("space_name", ["digits", "mnist1d", "fashion-mnist"])
def test_scores_of_built_in_space_networks_are_deterministic_for_a_seed(space_name):
    space = load_space(space_name)
    batch = batch_for(space.input_shape(1)[1:], n=16)
    batch = (batch[0], batch[1] % space.classes)
    for i in range(2):
        arch = space.sample(i)
        for proxy in PROXIES:
            first = score_arch(arch, space, batch, proxy, seed=3)
            assert math.isfinite(first)
            assert score_arch(arch, space, batch, proxy, seed=3) == first, (arch, proxy)


def test_other_seeds_give_other_initial_weights_and_scores():
    space = load_space("digits")
    arch = space.sample(1)
    batch = batch_for(space.input_shape(1)[1:], n=16)
    assert score_arch(arch, space, batch, "snip", seed=0) != score_arch(
        arch, space, batch, "snip", seed=1
    )


def test_naswot_is_lower_when_every_sample_has_the_same_activations():
    space = load_space("digits")
    torch.manual_seed(0)
    model = build_model(space.sample(5), space)
    x, y = batch_for(space.input_shape(1)[1:], n=32)
    same = x[:1].expand_as(x).clone()  # 32 copies of one sample: one code, a rank-1 kernel
    varied = score(model, (x, y), "naswot")
    identical = score(model, (same, y), "naswot")
    assert math.isfinite(identical)
    assert identical < varied - 50
    # log det (K + I) of K = units * ones(32, 32): log(1 + 32 * units), a handful at most
    assert identical < math.log(1 + 32 * 10_000)


def test_synflow_of_a_network_with_a_zeroed_head_is_zero_and_lower():
    space = load_space("digits")
    torch.manual_seed(0)
    model = build_model(space.sample(2), space)
    batch = batch_for(space.input_shape(1)[1:])
    full = score(model, batch, "synflow")
    with torch.no_grad():
        model.head.fc.weight.zero_()  # no path from any earlier parameter to the output
    cut = score(model, batch, "synflow")
    assert full > 0 and cut < full and cut == pytest.approx(0.0, abs=1e-12)


def test_synflow_ignores_the_batch_and_bypasses_batchnorm():
    space = load_space("digits")
    torch.manual_seed(0)
    model = build_model(space.sample(3), space)
    a = batch_for(space.input_shape(1)[1:], seed=0)
    b = batch_for(space.input_shape(1)[1:], seed=1)
    assert score(model, a, "synflow") == score(model, b, "synflow")  # all-ones input only
    # BatchNorm statistics do not enter: changing its running stats changes nothing
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(100.0)
    assert score(model, a, "synflow") == score(model, b, "synflow")


def test_scoring_leaves_the_model_and_the_global_rng_as_they_were():
    space = load_space("digits")
    torch.manual_seed(0)
    model = build_model(space.sample(4), space)
    model.eval()
    model.head.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = batch_for(space.input_shape(1)[1:])
    rng = torch.get_rng_state()
    with torch.no_grad():
        for proxy in PROXIES:
            score(model, batch, proxy, seed=7)
        assert not torch.is_grad_enabled()  # the caller's grad mode is back
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and not any(m.training for m in model.modules())
    assert model.head.fc.weight.requires_grad is False
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN buffers too
    assert next(model.parameters()).dtype == torch.float32  # synflow's double stays inside


def test_unknown_proxy_is_a_one_line_error_listing_the_allowed_ones():
    space = load_space("digits")
    batch = batch_for(space.input_shape(1)[1:])
    with pytest.raises(ProxyError) as err:
        score_arch(space.sample(0), space, batch, "jacov", seed=0)
    message = str(err.value)
    assert isinstance(err.value, FusionNasError) and "\n" not in message
    assert "'jacov'" in message and all(repr(p) in message for p in PROXIES)


def test_a_batch_that_is_not_x_y_is_refused_in_one_line():
    space = load_space("digits")
    torch.manual_seed(0)
    model = build_model(space.sample(0), space)
    with pytest.raises(ProxyError, match="pair"):
        score(model, torch.zeros(4, 1, 8, 8), "snip")  # type: ignore[arg-type]


def test_train_batch_comes_from_the_train_split_only():
    from fusion_nas.training.data import dataset_for

    space = load_space("digits")
    x, y = train_batch(space, "digits", size=64, seed=0)
    assert x.shape == (64, 1, 8, 8) and y.shape == (64,)
    splits = dataset_for("digits", space.source, None, 0.2, 0, None)
    train = {tuple(r.flatten().tolist()) for r in splits.train.tensors[0]}
    val = {tuple(r.flatten().tolist()) for r in splits.val.tensors[0]} - train
    rows = {tuple(r.flatten().tolist()) for r in x}
    assert rows <= train and not rows & val
    again = train_batch(space, "digits", size=64, seed=0)
    assert torch.equal(again[0], x) and torch.equal(again[1], y)


def test_a_network_whose_map_shrinks_to_one_position_is_scored():
    from fusion_nas.model.space import parse_space

    toml = """
name = "tiny"
[input]
kind = "sequence"
length = 4
channels = 1
classes = 3
[stem]
width = 4
kernel = 3
stride = 2
[[stage]]
operator = ["conv"]
kernel = [3]
width = [4]
downsample = "conv"
"""
    space = parse_space(toml)
    arch = space.sample(0)
    batch = batch_for((1, 4), n=4)
    values = [score_arch(arch, space, batch, p, seed=0) for p in PROXIES]
    assert all(math.isfinite(v) for v in values)
