"""Optuna and NNI strategies choose the richer vocabulary: downsampling, MLP ratio, depth 0."""

from __future__ import annotations

import optuna
import pytest

from fusion_nas.model.space import load_space, parse_space
from fusion_nas.search.strategies import nni_strategies as ns
from fusion_nas.search.strategies.optuna_strategies import suggest_architecture
from tests.helpers.spaces import VOCAB


def _suggested(space, n: int) -> list:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    archs = []
    for _ in range(n):
        trial = study.ask()
        archs.append(suggest_architecture(trial, space))
        study.tell(trial, 0.0)
    return archs, study


def test_optuna_suggests_the_new_choices() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(VOCAB)
    archs, study = _suggested(space, 120)
    first = [a.stages[0] for a in archs]
    assert {s.downsample for s in first if s.depth} == {"none", "pool", "conv"}
    assert {s.mlp_ratio for s in first if s.operator == "gated"} == {0.0, 1.0}
    assert any(s.operator == "skip" for s in first)
    for a in archs:
        assert space.validate(a) == a  # canonical in the space: fixed fields left to it
    # a field with one value is not a parameter: spaces without the new choices keep theirs
    params = set(study.trials[0].params)
    assert {"s0_downsample", "s0_mlp_ratio"} <= params
    assert not params & {"s1_downsample", "s1_mlp_ratio"}


def test_optuna_parameters_of_an_old_space_are_unchanged() -> None:
    _, study = _suggested(load_space("digits"), 1)
    fields = ("operator", "kernel", "heads", "attention", "width", "depth")
    assert set(study.trials[0].params) == {f"s{i}_{f}" for i in (0, 1) for f in fields}


def test_nni_options_cover_the_new_choices() -> None:
    space = parse_space(VOCAB)
    options = ns._stage_options(space)
    assert [len(o) for o in options] == [st.count() for st in space.stages]  # labels unique
    labels = list(options[0])
    assert "skip" in labels
    assert "gated(k3,chan,mlp0,down=conv)@8" in labels
    arch = space.sample(5)
    assert ns.architecture_of(ns.sample_of(arch), space) == arch


@pytest.mark.parametrize("seed", range(6))
def test_every_sampled_vocab_architecture_round_trips(seed: int) -> None:
    space = parse_space(VOCAB)
    arch = space.sample(seed)
    assert type(arch).from_json(arch.to_json()) == arch
