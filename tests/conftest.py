"""Shared test setup: deterministic weights and one intra-op thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)
    # One thread, not two: the test models are small, and when the 2 cores are shared (tests
    # running side by side) two OpenMP threads wait on each other and run 10-30x slower.
    torch.set_num_threads(1)
