"""Measured latency: records are positive and ordered, both backends run, settings restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fusion_nas.deploy.latency import (
    BACKENDS,
    LatencyError,
    LatencyRecord,
    arch_latency,
    measure_latency,
)
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.space import load_space

ARCH = Architecture(
    "digits",
    (
        StageChoice("parallel", 8, 1, kernel=3, heads=2, attention="global"),
        StageChoice("gated", 16, 1, kernel=3, heads=1, attention="linear"),
    ),
)


def check_ordered(record: LatencyRecord, batches: tuple[int, ...]) -> None:
    assert record.batches == batches
    for p in record.points:
        assert 0 < p.p10_ms <= p.p25_ms <= p.median_ms <= p.p75_ms <= p.p90_ms
        assert p.iqr_ms >= 0
        assert p.per_sample_ms == pytest.approx(p.median_ms / p.batch)


def test_eager_record_is_positive_ordered_and_restores_threads_and_modes() -> None:
    space = load_space("digits")
    model = build_model(ARCH, space).train()
    torch.set_num_threads(2)
    record = measure_latency(model, space.input_shape(1), batch_sizes=(1, 8), warmup=1, runs=5)
    assert torch.get_num_threads() == 2  # the caller's thread count is back
    assert model.training and all(m.training for m in model.modules())
    assert (record.backend, record.threads, record.warmup, record.runs) == ("eager", 1, 1, 5)
    check_ordered(record, (1, 8))
    assert record.median_ms(8) == record.point(8).median_ms
    assert LatencyRecord.from_dict(record.to_dict()) == record


def test_onnxruntime_backend_measures_the_exported_graph() -> None:
    space = load_space("digits")
    record = arch_latency(ARCH, space, batch_sizes=(1, 4), warmup=1, runs=3, backend="onnxruntime")
    assert record.backend == "onnxruntime" and record.threads == 1
    check_ordered(record, (1, 4))


def test_arch_latency_builds_the_architecture_of_its_space() -> None:
    record = arch_latency(ARCH, batch_sizes=(2,), warmup=0, runs=2)
    check_ordered(record, (2,))
    with pytest.raises(LatencyError, match="batch size 1 was not measured; measured: 2"):
        record.point(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorrt"}, "unknown latency backend 'tensorrt'; allowed: 'eager', 'onnx"),
        ({"runs": 0}, "runs must be an integer >= 1, got 0"),
        ({"batch_sizes": (1, 0)}, "batch size must be an integer >= 1, got 0"),
        ({"threads": 0}, "threads must be an integer >= 1, got 0"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(LatencyError, match=message.replace("(", r"\(")):
        measure_latency(nn.Linear(4, 2), (1, 4), **kwargs)
    assert "onnxruntime" in BACKENDS


def test_example_shape_needs_a_batch_axis() -> None:
    with pytest.raises(LatencyError, match=r"example_shape must be \(B, C, \*S\)"):
        measure_latency(nn.Linear(4, 2), (4,))
