"""Proxy training learns: real data beats chance by a stated margin, and the schedule is applied.

Chance on every dataset here is 0.1 (ten balanced classes). The margins below leave headroom
over what these settings reach (digits: 0.93-0.96 with conv, 0.83-0.90 with gated; mnist1d:
0.89-0.92 with conv over seeds 0-3), so they hold across platforms while a model whose
weights never move (no optimiser step) stays near chance and fails every one of them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from fusion_nas.evaluation.trainer import EvalTask, evaluate
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.space import SearchSpace, load_space
from fusion_nas.store.records import TrialStatus
from fusion_nas.training.data import load_dataset
from fusion_nas.training.loop import (
    ProxyConfig,
    _schedule,
    evaluate_accuracy,
    model_device,
    train_proxy,
)
from fusion_nas.training.protocol import TrainingProtocol, all_training_data

CHANCE = 0.1


def _uniform(space: SearchSpace, operator: str) -> Architecture:
    """``operator`` in every stage at its widest, with one block (no stage skipped), and each
    stage's first choice of kernel, heads and attention; the last downsampling and MLP ratio
    where the space offers a choice (``None`` where it fixes them)."""
    stages = tuple(
        StageChoice(
            operator=operator,
            kernel=s.kernel[0],
            heads=s.heads[0],
            attention=s.attention[0],
            width=max(s.width),
            depth=min(d for d in s.depth if d > 0),
            mlp_ratio=s.mlp_ratio[-1] if len(s.mlp_ratio) > 1 else None,
            downsample=s.downsample[-1] if len(s.downsample) > 1 else None,
        )
        for s in space.stages
    )
    return Architecture(space.name, stages)


@pytest.mark.parametrize(
    ("dataset", "operator", "subset", "at_least"),
    [
        ("digits", "conv", None, 0.7),
        ("digits", "gated", None, 0.6),
        ("mnist1d", "conv", 1600, 0.7),
    ],
)
def test_a_few_epochs_beat_chance_by_a_wide_margin(dataset, operator, subset, at_least) -> None:
    space = load_space(dataset)
    task = EvalTask(
        arch_json=_uniform(space, operator).to_json(),
        space_source=space.source,
        dataset=dataset,
        proxy=ProxyConfig(epochs=4, batch_size=32, train_subset=subset),
        seed=0,
    )
    out = evaluate(task)
    assert out.status == TrialStatus.COMPLETE, out.reason
    assert out.val_acc >= at_least > 5 * CHANCE, out.curve
    assert len(out.curve) == 4 and out.curve[-1] == out.val_acc
    assert out.curve[-1] > out.curve[0]  # later epochs improve on the first


def test_training_lowers_the_loss_and_raises_accuracy_from_the_untrained_model() -> None:
    space = load_space("digits")
    splits = load_dataset(
        "digits",
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
    )
    torch.manual_seed(0)
    model = build_model(_uniform(space, "conv"), space)
    x, y = splits.train.tensors

    def train_loss() -> float:
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    loss_before, acc_before = train_loss(), evaluate_accuracy(model, splits.val)
    assert acc_before < 3 * CHANCE  # an untrained network guesses
    assert loss_before > 0.8 * math.log(10)  # about the loss of a uniform guess
    result = train_proxy(model, splits.train, splits.val, ProxyConfig(epochs=4, batch_size=32))
    loss_after, acc_after = train_loss(), evaluate_accuracy(model, splits.val)
    assert loss_after < 0.5 * loss_before
    assert acc_after >= acc_before + 0.5
    assert result.val_acc == acc_after  # the reported score is the trained model's


# --------------------------------------------------------------------------- the schedule


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_zero() -> None:
    total, warmup = 14, 4
    f = _schedule(total, warmup)
    assert [f(s) for s in range(warmup)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(warmup - 1) == pytest.approx(1.0)  # the peak is reached at the end of warm-up
    assert f(warmup) == pytest.approx(1.0)  # and the cosine starts from it
    assert f(warmup + (total - warmup) // 2) == pytest.approx(0.5)  # half-way down
    assert f(total) == pytest.approx(0.0, abs=1e-12)
    assert f(total + 5) == pytest.approx(0.0, abs=1e-12)  # never back up past the end
    decay = [f(s) for s in range(warmup, total + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    # A quarter of the way down the cosine: 0.5 * (1 + cos(pi / 4)).
    quarter = f(warmup + (total - warmup) / 4)
    assert quarter == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_schedule_without_warmup_room_still_starts_at_the_peak() -> None:
    f = _schedule(5, 1)
    assert f(0) == pytest.approx(1.0)
    assert f(5) == pytest.approx(0.0, abs=1e-12)


def test_train_proxy_steps_the_optimiser_with_the_scheduled_learning_rate(monkeypatch) -> None:
    """Every optimiser step runs at ``lr * schedule(step)``; steps = epochs * batches."""
    stepped_at: list[float] = []

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            stepped_at.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    space = load_space("digits")
    splits = load_dataset(
        "digits",
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
        train_subset=64,
    )
    config = ProxyConfig(epochs=3, batch_size=16, lr=0.01, warmup_epochs=0.5)
    model = build_model(_uniform(space, "conv"), space)
    before = [p.detach().clone() for p in model.parameters()]
    train_proxy(model, splits.train, splits.val, config)
    steps_per_epoch, total = 4, 12  # 64 samples in batches of 16, three epochs
    warmup = 2  # half an epoch
    expected = [config.lr * _schedule(total, warmup)(s) for s in range(total)]
    assert stepped_at == pytest.approx(expected)
    assert stepped_at[: warmup + 1] == pytest.approx([0.005, 0.01, 0.01])
    assert len(stepped_at) == config.epochs * steps_per_epoch
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # all trained


def test_on_epoch_sees_the_learning_rate_fall_and_accuracy_rise(monkeypatch) -> None:
    space = load_space("digits")
    splits = load_dataset(
        "digits",
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
        train_subset=400,
    )
    opts: list[torch.optim.Optimizer] = []
    real = torch.optim.AdamW

    def capture(*args, **kwargs):
        opts.append(real(*args, **kwargs))
        return opts[-1]

    monkeypatch.setattr(torch.optim, "AdamW", capture)
    seen: list[tuple[int, float | None, float]] = []
    model = build_model(_uniform(space, "conv"), space)
    config = ProxyConfig(epochs=4, batch_size=32, warmup_epochs=1.0)
    result = train_proxy(
        model,
        splits.train,
        splits.val,
        config,
        on_epoch=lambda e, acc: seen.append((e, acc, opts[0].param_groups[0]["lr"])),
    )
    assert [e for e, _, _ in seen] == [0, 1, 2, 3]
    assert [acc for _, acc, _ in seen] == result.curve
    lrs = [lr for _, _, lr in seen]
    # After the warm-up epoch the rate only falls, and it reaches zero with the last step.
    assert lrs[0] == pytest.approx(config.lr) and lrs[0] > lrs[1] > lrs[2] > lrs[3]
    assert lrs[3] == pytest.approx(0.0, abs=1e-12)
    assert result.curve[-1] >= result.curve[0] + 0.2


# --------------------------------------------------------------------------- devices


class _Seen(torch.nn.Module):
    """A linear classifier that keeps every training batch it is given (flattened)."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(features, classes)
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches.append(x.detach().clone())
        return self.fc(x.flatten(1))


def test_batches_come_in_the_order_of_a_seeded_loader_over_the_data() -> None:
    """The order a ``DataLoader(train, shuffle=True)`` with the seeded generator gives: the
    order every CPU result before devices was computed with, so those results stand."""
    x, y = torch.randn(70, 3, 5), torch.randint(0, 4, (70,))
    train = TensorDataset(x, y)
    config = ProxyConfig(epochs=2, batch_size=16)
    model = _Seen(15, 4)
    train_proxy(model, train, None, config, seed=7, device="cpu")
    generator = torch.Generator().manual_seed(7)
    loader = DataLoader(train, batch_size=16, shuffle=True, generator=generator)
    expected = [xb for _ in range(config.epochs) for xb, _ in loader]
    assert len(model.batches) == len(expected) == 10  # 5 batches (the last of 6) per epoch
    assert all(torch.equal(a, b) for a, b in zip(model.batches, expected))


def test_an_explicit_cpu_device_gives_the_same_weights_and_scores_as_none() -> None:
    space = load_space("digits")
    splits = load_dataset(
        "digits",
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
        train_subset=96,
    )
    runs = []
    for device in (None, "cpu", torch.device("cpu")):
        torch.manual_seed(0)
        model = build_model(_uniform(space, "conv"), space)
        result = train_proxy(
            model, splits.train, splits.val, ProxyConfig(epochs=2, batch_size=32), device=device
        )
        runs.append((result.curve, [p.detach().clone() for p in model.parameters()]))
    for curve, params in runs[1:]:
        assert curve == runs[0][0]
        assert all(torch.equal(a, b) for a, b in zip(params, runs[0][1]))


def test_training_and_scoring_run_where_the_model_is() -> None:
    """``model_device`` finds a model's device (``meta`` stands in for an accelerator); the
    batches reach the model on it (here the CPU; on CUDA in the ``gpu`` test below)."""
    assert model_device(_Seen(15, 4).to("meta")) == torch.device("meta")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU
    model = _Seen(15, 4)
    assert model_device(model) == torch.device("cpu")
    data = TensorDataset(torch.randn(20, 3, 5), torch.randint(0, 4, (20,)))
    seen: list[torch.device] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].device))
    train_proxy(model, data, data, ProxyConfig(epochs=1, batch_size=8), device="cpu")
    assert seen and set(seen) == {torch.device("cpu")}
    assert 0.0 <= evaluate_accuracy(model, data) <= 1.0


def test_the_final_run_learns_before_its_one_test_evaluation() -> None:
    """``TrainingProtocol.retrain`` goes through the same loop: the test accuracy after the
    final schedule is far above chance (a model whose weights never move stays near it)."""
    space = load_space("digits")
    protocol = TrainingProtocol("digits", space, ProxyConfig(batch_size=32), seed=0)
    model, result = protocol.retrain(lambda: build_model(_uniform(space, "conv"), space), 3)
    assert result.test_acc >= 0.7 > 5 * CHANCE
    assert result.epochs == 3 and result.train_samples > result.test_samples > 0
    assert model_device(model) == torch.device("cpu")


class _Samples(Dataset):
    """A user's own dataset: one ``(x, label)`` sample per index, the label a plain int."""

    def __init__(self, data: TensorDataset) -> None:
        self.x, self.y = data.tensors[:2]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def _digits(train_subset: int | None = None):
    space = load_space("digits")
    splits = load_dataset(
        "digits",
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
        train_subset=train_subset,
    )
    return space, splits


def test_any_dataset_trains_to_the_same_weights_and_scores_as_its_tensors() -> None:
    """A non-tensor dataset goes through a seeded ``DataLoader``: the same order, the same
    batches, so the same weights, curve and scores as the TensorDataset of its samples."""
    space, splits = _digits(train_subset=96)
    runs = []
    for wrap in (lambda d: d, _Samples):
        torch.manual_seed(0)
        model = build_model(_uniform(space, "conv"), space)
        steps: list[tuple[int, int]] = []
        result = train_proxy(
            model,
            wrap(splits.train),
            wrap(splits.val),
            ProxyConfig(epochs=2, batch_size=32),
            seed=3,
            on_step=lambda n, total, _loss, steps=steps: steps.append((n, total)),
        )
        runs.append((result.curve, [p.detach().clone() for p in model.parameters()], steps))
        assert evaluate_accuracy(model, wrap(splits.val)) == result.val_acc
    (curve, params, steps), (curve2, params2, steps2) = runs
    assert curve == curve2 and steps == steps2 == [(n, 6) for n in range(1, 7)]
    assert all(torch.equal(a, b) for a, b in zip(params, params2))


def test_a_custom_dataset_learns_and_its_score_moves_with_the_weights() -> None:
    space, splits = _digits()
    torch.manual_seed(0)
    model = build_model(_uniform(space, "conv"), space)
    val = _Samples(splits.val)
    before = evaluate_accuracy(model, val)
    result = train_proxy(model, _Samples(splits.train), val, ProxyConfig(epochs=3, batch_size=32))
    assert before < 3 * CHANCE and result.val_acc >= 0.7 > before + 0.3
    assert evaluate_accuracy(model, val, batch_size=7) == result.val_acc  # any batch size


def test_all_training_data_concatenates_tensors_or_any_datasets_in_order() -> None:
    a = TensorDataset(torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 2]))
    b = TensorDataset(torch.arange(6.0, 10.0).reshape(2, 2), torch.tensor([3, 4]))
    both = all_training_data(a, b)
    assert isinstance(both, TensorDataset) and torch.equal(both.tensors[1], torch.arange(5))
    mixed = all_training_data(_Samples(a), b)
    assert isinstance(mixed, ConcatDataset) and len(mixed) == 5
    assert [int(mixed[i][1]) for i in range(5)] == list(range(5))
    assert all(torch.equal(mixed[i][0], both[i][0]) for i in range(5))
    # the final run trains the same weights from either form
    runs = []
    for data in (both, all_training_data(_Samples(a), _Samples(b))):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 5)
        train_proxy(model, data, None, ProxyConfig(epochs=2, batch_size=2), seed=1)
        runs.append(model.weight.detach().clone())
    assert torch.equal(*runs)


@pytest.mark.gpu
def test_training_on_cuda_moves_model_and_batches_and_learns() -> None:
    space = load_space("digits")
    splits = load_dataset(
        "digits", kind=space.kind, channels=space.channels, size=space.size, classes=space.classes
    )
    torch.manual_seed(0)
    model = build_model(_uniform(space, "conv"), space)
    seen: list[torch.device] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].device))
    result = train_proxy(
        model, splits.train, splits.val, ProxyConfig(epochs=4, batch_size=32), device="cuda:0"
    )
    assert model_device(model).type == "cuda" and {d.type for d in seen} == {"cuda"}
    assert result.val_acc >= 0.7  # as on the CPU (0.93-0.96 for this network)
    # CPU data, moved to the model's GPU to be scored (GPU kernels may differ in the last bit)
    assert evaluate_accuracy(model, splits.val) == pytest.approx(result.val_acc, abs=0.01)
