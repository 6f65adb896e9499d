"""A trial on a GPU: its peak device memory is recorded, and running out of device memory fails
that trial with the reason while the search goes on.

No GPU is needed: the peak is patched in where torch would read it, and the network of a trial
raises the error a GPU raises (``torch.cuda.OutOfMemoryError``, or the ``RuntimeError`` of
other devices and older torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fusion_nas.evaluation import trainer
from fusion_nas.evaluation.trainer import EvalTask, evaluate
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.records import TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.training import devices
from fusion_nas.training.loop import ProxyConfig

CUDA_OOM = torch.cuda.OutOfMemoryError(
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB"
)
OTHER_OOM = RuntimeError("MPS backend out of memory (MPS allocated: 9.00 GB)")


class _Exhausts(nn.Module):
    """Stands in for a network too large for the device: its forward pass raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


def _task(**proxy: Any) -> EvalTask:
    space = load_space("digits")
    config = ProxyConfig(epochs=1, train_subset=64, **proxy)
    return EvalTask(space.sample(0).to_json(), space.source, "synthetic", config)


def test_the_kinds_of_out_of_memory_errors_are_told_apart() -> None:
    assert devices.is_out_of_memory(CUDA_OOM) and devices.is_out_of_memory(OTHER_OOM)
    assert not devices.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not devices.is_out_of_memory(MemoryError())  # the host's, not a device's


def test_peak_memory_is_none_off_cuda() -> None:
    devices.reset_peak_memory("cpu")  # nothing to reset, and nothing raised
    assert devices.peak_memory("cpu") is None


@pytest.mark.parametrize("error", [CUDA_OOM, OTHER_OOM], ids=["cuda", "runtime"])
def test_a_trial_out_of_device_memory_fails_with_that_reason(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(trainer, "build_model", lambda arch, space: _Exhausts(error))
    out = evaluate(_task())
    assert out.status == TrialStatus.FAILED
    assert out.reason.startswith("out of device memory on cpu: ")
    assert "out of memory" in out.reason.split(": ", 1)[1].lower() and "\n" not in out.reason


def test_a_cuda_trial_resets_and_records_its_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(trainer, "reset_peak_memory", lambda d: calls.append(f"reset {d}"))
    monkeypatch.setattr(trainer, "peak_memory", lambda d: calls.append(f"peak {d}") or 4096)
    out = evaluate(_task())
    assert out.status == TrialStatus.COMPLETE and out.peak_memory == 4096
    assert calls == ["reset cpu", "peak cpu"]  # reset before training, read after it


@pytest.mark.filterwarnings("ignore::fusion_nas.errors.ShortProxyWarning")
def test_the_search_records_peaks_and_goes_on_past_an_out_of_memory_trial(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built = []
    real_build = trainer.build_model

    def build(arch: Any, space: Any) -> nn.Module:
        built.append(arch)
        return _Exhausts(CUDA_OOM) if len(built) == 2 else real_build(arch, space)

    monkeypatch.setattr(trainer, "build_model", build)
    monkeypatch.setattr(trainer, "peak_memory", lambda d: 123_456_789)
    config = SearchConfig(
        name="oom",
        space=load_space("digits"),
        dataset="synthetic",
        trials=4,
        proxy=ProxyConfig(epochs=1, train_subset=64),
        device="cpu",
        latency="off",
    )
    store = Store(f"sqlite:///{tmp_path}/s.db")
    run_search(config, store)
    trained = [r for r in store.records("oom") if r.duplicate_of is None]
    statuses = [r.status for r in trained]
    assert statuses.count(TrialStatus.FAILED) == 1 and len(store.records("oom")) == 4
    failed = next(r for r in trained if r.status == TrialStatus.FAILED)
    assert failed.fail_reason.startswith(
        "out of device memory on cpu: OutOfMemoryError: CUDA out of memory. Tried to allocate"
    )
    assert failed.peak_memory is None  # off CUDA nothing is read after the failure
    assert all(r.peak_memory == 123_456_789 for r in trained if r.status == TrialStatus.COMPLETE)
