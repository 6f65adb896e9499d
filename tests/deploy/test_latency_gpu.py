"""Latency of a model on a real GPU (marked ``gpu``: deselected where there is no CUDA)."""

from __future__ import annotations

import pytest
import torch

from fusion_nas.deploy.latency import measure_latency
from fusion_nas.model.build import build_model
from fusion_nas.model.space import load_space


@pytest.mark.gpu
def test_a_network_on_cuda_has_positive_ordered_event_timings() -> None:
    space = load_space("digits")
    torch.manual_seed(0)
    model = build_model(space.sample(0), space).cuda()
    record = measure_latency(model, space.input_shape(1), batch_sizes=(1, 64), warmup=3, runs=10)
    for p in record.points:
        assert 0 < p.p10_ms <= p.median_ms <= p.p90_ms
    assert next(model.parameters()).is_cuda  # measured where it lives
