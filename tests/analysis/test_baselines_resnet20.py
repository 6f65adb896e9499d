"""The ``resnet20`` baseline: He et al.'s CIFAR ResNet-20 with option-A shortcuts, its exact cost
(by hand, by PyTorch's FLOP counter and by the toolkit's counter), and where it is offered."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fusion_nas.analysis.baselines import (
    BASELINES,
    Baseline,
    BaselineError,
    ResNet20,
    Unavailable,
    baselines_for,
    resnet20_cost,
    select,
    train_baseline,
)
from fusion_nas.model.cost import count_cost
from fusion_nas.model.space import load_space, parse_space
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.training.protocol import TrainingProtocol

# ResNet-20 on CIFAR-10 (3x32x32), counted by hand: the stem; stage 1 at 32x32, six 16->16
# convs; stage 2 at 16x16, one 16->32 and five 32->32 convs; stage 3 at 8x8, one 32->64 and
# five 64->64 convs; the linear head. Params: the conv weights (no biases), 2 per BN channel
# (19 BN layers), the head's weights and biases.
CIFAR_MACS = (
    3 * 16 * 9 * 32 * 32
    + 6 * 16 * 16 * 9 * 32 * 32
    + (16 * 32 * 9 + 5 * 32 * 32 * 9) * 16 * 16
    + (32 * 64 * 9 + 5 * 64 * 64 * 9) * 8 * 8
    + 64 * 10
)
CIFAR_PARAMS = (
    3 * 16 * 9
    + 6 * 16 * 16 * 9
    + 16 * 32 * 9
    + 5 * 32 * 32 * 9
    + 32 * 64 * 9
    + 5 * 64 * 64 * 9
    + 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    + 64 * 10
    + 10
)


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs by PyTorch's own FLOP counter (a multiply-add is two FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_hand_count_is_the_published_cost() -> None:
    assert (CIFAR_MACS, CIFAR_PARAMS) == (40_551_040, 269_722)
    assert round(CIFAR_PARAMS / 1e6, 2) == 0.27  # published: 0.27M params
    assert abs(CIFAR_MACS - 40.8e6) / 40.8e6 < 0.01  # published: 40.8M (BN, adds counted too)


def test_resnet20_on_cifar10_has_the_published_cost_by_every_count() -> None:
    model = ResNet20(3, 10)
    x = torch.zeros(1, 3, 32, 32)
    assert resnet20_cost(3, (32, 32), 10) == (CIFAR_MACS, CIFAR_PARAMS)
    assert n_params(model) == CIFAR_PARAMS
    assert flop_counter_macs(model, x) == CIFAR_MACS
    assert count_cost(model, x) == count_cost(model, x)  # counting leaves the model as it was
    assert count_cost(model, x).macs == CIFAR_MACS
    (b,) = [b for b in baselines_for(load_space("cifar10")) if b.name == "resnet20"]
    assert isinstance(b, Baseline) and b.arch is None
    assert (b.macs, b.params) == (CIFAR_MACS, CIFAR_PARAMS)
    assert "option-A" in b.description and "He et al. 2016" in b.description


def test_resnet20_is_the_papers_layout() -> None:
    model = ResNet20(3, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # 1 + 3 stages x 3 blocks x 2; no projection shortcuts (option A)
    assert {c.kernel_size for c in convs} == {(3, 3)} and all(c.bias is None for c in convs)
    assert [c.out_channels for c in convs] == [16] * 7 + [32] * 6 + [64] * 6
    strided = [i for i, c in enumerate(convs) if c.stride == (2, 2)]
    assert strided == [7, 13]  # the first conv of stages 2 and 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 19
    assert (model.head.in_features, model.head.out_features) == (64, 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcut_is_the_strided_identity_padded_with_zero_channels() -> None:
    model = ResNet20(3, 10).eval()
    block = model.stages[3]  # first block of stage 2: 16 -> 32 channels, stride 2
    assert (block.conv1.in_channels, block.conv1.out_channels, block.stride) == (16, 32, 2)
    nn.init.zeros_(block.bn2.weight)  # the residual branch now adds exactly zero
    nn.init.zeros_(block.bn2.bias)
    x = torch.randn(2, 16, 9, 9)  # odd size: the shortcut keeps ceil(9 / 2) = 5, as the conv
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 32, 5, 5)
    torch.testing.assert_close(out[:, 8:24], torch.relu(x[:, :, ::2, ::2]))
    assert not out[:, :8].any() and not out[:, 24:].any()


@pytest.mark.parametrize(
    ("channels", "size", "classes"), [(1, (28, 28), 10), (1, (7, 9), 3), (3, (33, 31), 100)]
)
def test_resnet20_on_other_images_is_counted_exactly(
    channels: int, size: tuple[int, int], classes: int
) -> None:
    model = ResNet20(channels, classes)
    x = torch.zeros(1, channels, *size)
    assert model(x).shape == (1, classes)
    expected = resnet20_cost(channels, size, classes)
    assert expected == (flop_counter_macs(model, x), n_params(model))
    assert count_cost(model, x).macs == expected[0]


@pytest.mark.parametrize("space", ["digits", "fashion-mnist", "cifar10", "coatnet-like"])
def test_resnet20_is_offered_for_every_image_space(space: str) -> None:
    sp = load_space(space)
    chosen, _ = select(sp, ["resnet20"])
    (b,) = chosen
    model = b.build()
    x = torch.zeros(sp.input_shape(1))
    assert model(x).shape == (1, sp.classes)
    assert (b.macs, b.params) == (flop_counter_macs(model, x), n_params(model))


def test_resnet20_is_unavailable_for_sequences_with_the_reason() -> None:
    sp = load_space("mnist1d")
    (b,) = [b for b in baselines_for(sp) if b.name == "resnet20"]
    assert isinstance(b, Unavailable)
    assert b.reason == "image spaces only; space 'mnist1d' takes sequences"
    chosen, skipped = select(sp)
    assert "resnet20" not in [c.name for c in chosen]
    assert "resnet20" in [s.name for s in skipped]
    with pytest.raises(BaselineError, match=r"'resnet20' is not available .*image spaces only"):
        select(sp, ["resnet20"])


def test_resnet20_sits_after_the_paper_networks_and_trains() -> None:
    assert list(BASELINES)[:3] == ["paper-cnn", "paper-gru", "resnet20"]
    sp = parse_space(
        "name = 'tiny'\n[input]\nkind = 'image'\nsize = [12, 12]\nchannels = 3\nclasses = 4\n"
        "[stem]\nwidth = 8\n[[stage]]\noperator = ['conv']\nwidth = 8\n"
    )
    (b,) = select(sp, ["resnet20"])[0]
    protocol = TrainingProtocol(
        dataset="synthetic", space=sp, proxy=ProxyConfig(epochs=1, batch_size=32, train_subset=64)
    )
    rec = train_baseline(b, protocol, epochs=1)
    assert (rec.name, rec.arch, rec.macs, rec.params) == ("resnet20", None, b.macs, b.params)
    assert 0.0 <= rec.val_acc <= 1.0 and 0.0 <= rec.test_acc <= 1.0
