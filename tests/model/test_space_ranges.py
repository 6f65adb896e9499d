"""The image spaces' measured cost ranges: the extremes recorded by
``benchmarks/space_cost_range.py`` are architectures of today's space files with exactly the
recorded cost, the descriptions state them, and the ranges cover what the spaces are for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.space import load_space

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
MEASURED = ("mnist1d", "fashion-mnist", "cifar10", "video-glyphs")


def _measured(name: str) -> dict:
    return json.loads((RESULTS / f"space_cost_range_{name}.json").read_text())


@pytest.mark.parametrize("name", MEASURED)
def test_recorded_extremes_are_architectures_of_the_space_with_that_cost(name: str) -> None:
    space, doc = load_space(name), _measured(name)
    assert doc["architectures"] == space.num_architectures()  # measured on this very file
    for key in ("min", "max", "min_params", "max_params"):
        if key not in doc:  # older records hold the MAC extremes only
            continue
        entry = doc[key]
        arch = space.validate(Architecture.from_dict(entry["json"]))
        assert arch.arch_id == entry["arch_id"]
        cost = arch_cost(arch, space)
        assert (cost.macs, cost.params) == (entry["macs"], entry["params"]), key


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
def test_description_and_comment_state_the_measured_range(name: str) -> None:
    space, doc = load_space(name), _measured(name)
    low, high = f"{doc['min']['macs']:,}", f"{doc['max']['macs']:,}"
    assert f"{low} to {high} MACs" in space.description
    lines = space.source.splitlines()
    comment = " ".join(line[1:].strip() for line in lines if line.startswith("#"))
    assert f"{low} to {high} MACs" in comment
    assert f"median {doc['sampled']['median_macs']:,}" in comment


def test_cifar10_covers_the_published_small_networks() -> None:
    doc = _measured("cifar10")
    assert doc["min"]["macs"] <= 5_000_000 and doc["max"]["macs"] >= 500_000_000
    # ResNet-20 (40.8M MACs) and CCT-2/3x2 (33M) lie inside the sampled middle half
    q = doc["sampled"]["macs_quantiles"]
    assert q["0.25"] <= 33_000_000 and 40_800_000 <= q["0.75"]
    space = load_space("cifar10")
    assert space.size == (32, 32) and (space.channels, space.classes) == (3, 10)


def test_fashion_mnist_space_holds_small_networks_up_to_tens_of_millions() -> None:
    doc = _measured("fashion-mnist")
    assert 10_000 <= doc["min"]["macs"] < 100_000  # tens of thousands
    assert 10_000_000 <= doc["max"]["macs"] < 100_000_000  # tens of millions
    assert doc["sampled"]["share_under_100k_params"] >= 0.3
    space = load_space("fashion-mnist")
    assert space.size == (28, 28) and space.channels == 1
    widths = {w for st in space.stages for w in st.width}
    assert min(widths) == 16 and max(widths) == 64
    fused = {"conv", "attention", "parallel", "gated"}
    assert all(set(st.operator) == fused for st in space.stages)
    # both a full-resolution first stage and the stride-2 entry of small CNNs
    assert {"none", "conv"} <= set(space.stages[0].downsample)


def test_a_conv_network_of_fashion_mnist_fits_the_100k_budget() -> None:
    """Three conv stages at 28x28, 14x14 and 7x7 (16, 32 and 64 channels; two, two and one
    blocks): the shape of the small CNNs published near 92-93%, under 100k params."""
    space = load_space("fashion-mnist")
    arch = space.validate(
        Architecture(
            space.name,
            (
                StageChoice("conv", 16, 2, 3, downsample="none"),
                StageChoice("conv", 32, 2, 3, downsample="pool"),
                StageChoice("conv", 64, 1, 3, downsample="pool"),
            ),
        )
    )
    cost = arch_cost(arch, space)
    assert cost.params < 100_000 and 1_000_000 < cost.macs < 20_000_000
