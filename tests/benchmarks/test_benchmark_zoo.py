"""The zoo's benchmarks without timm: timm_parity's stage shapes, import stub and table;
space_cost_range with zoo members."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fusion_nas.model import zoo
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.space import parse_space
from tests.cli.test_cli_zoo import HOST, TINY
from tests.helpers.benchmarks import load


@pytest.fixture(scope="module")
def parity():
    return load("timm_parity")


class _Tokens(nn.Module):
    """A stage that answers (B, N, C) tokens, as LeViT's and EfficientFormer's last do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class _Staged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), _Tokens())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


def test_stage_shapes_convert_token_outputs_and_say_so(parity):
    rows = parity.stage_shapes(_Staged(), torch.zeros(1, 3, 16, 16))
    assert rows[0] == {"module": "stages.0", "shape": [1, 8, 8, 8]}
    assert rows[1] == {"module": "stages.1", "shape": [1, 8, 8, 8], "from_tokens": [1, 64, 8]}


def test_the_import_stub_answers_torchvision_and_nothing_else(tmp_path: Path):
    # a fake timm that imports torchvision, as timm does; in a fresh process (the stub stays
    # installed where it runs)
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "__init__.py").write_text(
        "import torchvision.transforms\n__version__ = 'fake'\n"
    )
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import timm_parity as p; "
        f"t = p.import_timm(__import__('pathlib').Path({str(tmp_path)!r}), stub=True); "
        "print(t.__version__, type(sys.modules['torchvision']).__name__); "
        "import importlib.util as u; print(u.find_spec('numpy') is not None)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["fake", "_Stub", "True"]


def test_the_markdown_table_lists_rows_and_the_skipped(parity):
    row = {
        "zoo": "tiny",
        "timm": "tiny_timm",
        "params_ours": 1000,
        "params_timm": 1010,
        "params_ratio": 0.9901,
        "stage_shapes_equal": True,
        "macs_ours_cost_model": 2_000_000_000,
        "macs_timm_published": 2_100_000_000,
        "published_img_size": 256,
        "macs_timm_thop": 1_900_000_000,
        "macs_timm_cost_model": 2_000_000_000,
        "latency": {"ours_ms": 10.0, "timm_ms": 8.0, "ratio_ours_over_timm": 1.25},
    }
    meta = {"timm_version": "1", "torch_version": "2", "machine": "m", "rounds": 3, "runs": 5}
    text = parity.markdown([row], ["maxvit_tiny"], meta)
    assert "| tiny | tiny_timm | 1,000 / 1,010 (0.9901) | equal | 2.000 | 2.100 (at 256) |" in text
    assert "| 10.0 | 8.0 | 1.25 |" in text
    assert "Skipped (no zoo file yet): maxvit_tiny." in text


def test_space_cost_range_counts_the_members_and_they_may_be_extremes(tmp_path, monkeypatch):
    folder = tmp_path / "zoo"
    folder.mkdir()
    (folder / "tiny.toml").write_text(TINY)
    monkeypatch.setattr(zoo, "_zoo_dir", lambda: folder)
    space = parse_space(HOST)
    result = load("space_cost_range").cost_range(space)
    assert result["architectures"] == space.product_size() + 1
    (member,) = result["members"]
    cost = arch_cost(space.member_arch("tiny"), space)
    assert (member["member"], member["macs"], member["params"]) == ("tiny", cost.macs, cost.params)
    assert result["max"]["macs"] >= member["macs"] >= result["min"]["macs"]
    assert result["max_params"]["params"] >= member["params"]
    plain = load("space_cost_range").cost_range(parse_space(HOST.split("[zoo]")[0]))
    if member["params"] > plain["max_params"]["params"]:
        assert result["max_params"] == member
