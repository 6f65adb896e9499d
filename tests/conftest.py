"""Shared test setup: deterministic weights and a thread count that fits the 2-core machines."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
