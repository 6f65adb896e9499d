"""The GPU paths on a real GPU: every test here is marked ``gpu`` and is deselected, not skipped,
where there is no CUDA (tests/conftest.py). ``pytest -m gpu`` runs them; so does
``benchmarks/gpu_check.sh`` on a GPU machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.evaluation import trainer
from fusion_nas.evaluation.trainer import EvalTask, evaluate
from fusion_nas.model.space import load_space
from fusion_nas.store.records import TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.training.devices import check_precision
from fusion_nas.training.loop import ProxyConfig, train_proxy

pytestmark = pytest.mark.gpu
runner = CliRunner()


def _images(n: int = 256) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 16, 16, generator=gen)  # (N, C, H, W)
    return TensorDataset(x, (x[:, 0].mean(dim=(1, 2)) > 0).long())


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 2),
    )  # fmt: skip


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_on_the_gpu_in_channels_last(precision: str) -> None:
    check_precision(precision, "cuda:0")
    model = _net()
    config = ProxyConfig(epochs=10, batch_size=32, precision=precision, channels_last=True)
    result = train_proxy(model, _images(), _images(64), config, device="cuda:0")
    assert result.val_acc is not None and result.val_acc > 0.6  # chance: 0.5
    assert model[0].weight.is_cuda
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def _task() -> EvalTask:
    space = load_space("digits")
    config = ProxyConfig(epochs=1, train_subset=128)
    return EvalTask(space.sample(0).to_json(), space.source, "synthetic", config, device="cuda:0")


def test_a_trial_records_its_peak_gpu_memory() -> None:
    out = evaluate(_task())
    assert out.status == TrialStatus.COMPLETE, out.reason
    assert out.device.startswith("cuda:0 (") and out.peak_memory and out.peak_memory > 0


class _Huge(nn.Module):
    """Asks the GPU for more memory than any has (1 PiB) on its first forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.empty(1 << 48, device=x.device).sum() * self.weight


def test_a_real_out_of_memory_fails_the_trial_and_the_next_one_trains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_build = trainer.build_model
    monkeypatch.setattr(trainer, "build_model", lambda arch, space: _Huge())
    out = evaluate(_task())
    assert out.status == TrialStatus.FAILED and out.reason.startswith("out of device memory")
    monkeypatch.setattr(trainer, "build_model", real_build)
    assert evaluate(_task()).status == TrialStatus.COMPLETE


def test_a_search_runs_two_trials_per_gpu(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    res = runner.invoke(
        app,
        ["search", "digits", "--dataset", "synthetic", "--trials", "4", "--epochs", "1",
         "--train-subset", "128", "--name", "g", "--store", url, "--device", "cuda",
         "--trials-per-device", "2", "--precision", "bf16", "--channels-last"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    records = [r for r in Store(url).records("g") if r.duplicate_of is None]
    assert all(r.status == TrialStatus.COMPLETE for r in records)
    assert all(r.device.startswith("cuda:") and r.peak_memory > 0 for r in records)
