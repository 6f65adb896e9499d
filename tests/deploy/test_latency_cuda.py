"""Latency on CUDA: CUDA events around each timed forward pass, after an untimed warm-up.

No GPU is needed: torch's event, stream-synchronise and device-guard calls are replaced by fakes
that log what the timing code asks for, so the order of warm-up, events and synchronisation is
checked here; the real GPU run is in tests/deploy/test_latency_gpu.py (marked ``gpu``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from torch import nn

import fusion_nas.deploy.latency as latency

log: list[str] = []


class FakeEvent:
    """A CUDA event whose clock is the number of forward passes logged so far (1 ms each)."""

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.at: float | None = None

    def record(self) -> None:
        self.at = float(log.count("forward"))
        log.append("event")

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.at is not None and end.at is not None, "read before both were recorded"
        assert log[-1] == "synchronize", "events read before the GPU finished"
        return end.at - self.at


@pytest.fixture()
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    log.clear()
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())


def test_cuda_runs_are_timed_by_events_after_the_warm_up(fake_cuda: None) -> None:
    times = latency._time_runs_cuda(
        lambda: log.append("forward"), warmup=2, runs=3, device=torch.device("cuda:0")
    )
    assert times == [1.0, 1.0, 1.0]  # each timed pass alone lies between its two events
    assert log == (
        ["forward", "forward", "synchronize"]  # warm-up, untimed, finished before timing
        + ["event", "forward", "event"] * 3
        + ["synchronize"]  # once, after every run was queued
    )


def test_a_model_on_cuda_goes_through_the_event_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used: list[tuple[str, Any]] = []
    monkeypatch.setattr(latency, "_model_device", lambda model: torch.device("cuda:0"))
    monkeypatch.setattr(
        latency,
        "_time_runs_cuda",
        lambda call, warmup, runs, device: used.append(("events", device)) or [2.0] * runs,
    )
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self)  # stays on the CPU
    record = latency.measure_latency(nn.Linear(4, 2), (1, 4), batch_sizes=(1, 3), runs=4)
    assert used == [("events", torch.device("cuda:0"))] * 2
    assert [p.median_ms for p in record.points] == [2.0, 2.0]


def test_a_cpu_model_is_timed_by_the_host_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latency, "_time_runs_cuda", lambda *a: pytest.fail("CUDA timer on CPU"))
    record = latency.measure_latency(nn.Linear(4, 2), (1, 4), batch_sizes=(2,), runs=3)
    assert record.points[0].median_ms > 0
