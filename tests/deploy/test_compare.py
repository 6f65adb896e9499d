"""``fusion-nas cost`` and :mod:`fusion_nas.deploy.counters`: exact, thop and flop_counter
counts."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.deploy.counters import CostError, compare_counts, exported_config
from fusion_nas.deploy.export import write_export
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.cost import arch_cost, count_cost
from fusion_nas.model.space import load_space

runner = CliRunner()
ATTN = Architecture(
    "digits",
    (
        StageChoice("attention", 8, 1, heads=2, attention="global"),
        StageChoice("conv", 16, 1, kernel=3),
    ),
)
CONV = Architecture(
    "digits", (StageChoice("conv", 8, 1, kernel=5), StageChoice("conv", 16, 1, kernel=3))
)


def test_thop_counts_the_attention_mixer_as_zero_and_the_exact_count_does_not() -> None:
    space = load_space("digits")
    model = build_model(ATTN, space)
    keys = set(model.state_dict())
    c = compare_counts(model, torch.zeros(space.input_shape(1)))
    attn = c.row("stages.0.1.attn")  # GlobalAttention's own forward: the SDPA matmuls
    tokens, width = 64, 8
    assert attn.exact == 2 * tokens * tokens * width  # QK^T and AV
    assert attn.thop == 0
    assert attn.flop_counter == 0  # no formula for the CPU SDPA kernel either
    qkv = c.row("stages.0.1.attn.qkv")  # its projections: all three agree
    assert qkv.exact == qkv.thop == qkv.flop_counter == tokens * width * 3 * width
    # rows add up to the totals, and the exact total is fusion_nas.model.cost's
    assert c.exact == sum(r.exact for r in c.rows) == arch_cost(ATTN, space).macs
    assert c.thop == sum(r.thop for r in c.rows) and c.thop < c.exact
    assert c.flop_counter_flops == 2 * c.flop_counter
    assert set(model.state_dict()) == keys  # thop ran on a copy: no buffers left behind


def test_on_a_conv_only_model_all_three_counts_agree() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1, bias=False),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )
    x = torch.zeros(1, 1, 8, 8)
    c = compare_counts(model, x)
    expected = 36 * 4 * 9 + 36 * 8 * 4 * 9 + 288 * 10
    assert c.exact == c.thop == c.flop_counter == expected == count_cost(model, x).macs
    assert not c.differing()
    assert [r.name for r in c.rows] == ["0", "2", "4"]


def test_conv_fusionnet_differs_only_where_thop_counts_normalisation() -> None:
    space = load_space("digits")
    c = compare_counts(build_model(CONV, space), torch.zeros(space.input_shape(1)))
    assert c.exact == c.flop_counter
    assert {r.type for r in c.differing()} <= {"BatchNorm2d", "LayerNorm", "AvgPool2d"}
    assert all(r.thop > r.exact == 0 for r in c.differing())


def test_multihead_attention_is_zero_for_thop() -> None:
    class Self(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, need_weights=False)[0]

    c = compare_counts(Self(), torch.zeros(1, 5, 8))
    row = c.row("mha")
    assert row.thop == 0 and row.exact == 4 * 5 * 8 * 8 + 2 * 5 * 5 * 8


def test_cli_compare_lists_thops_zero_beside_the_exact_count() -> None:
    res = runner.invoke(app, ["cost", "digits", "--arch", ATTN.to_json(), "--compare"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "stages.0.1.attn " in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[:5] == ["stages.0.1.attn", "GlobalAttention", "65,536", "0", "0"]
    exact = arch_cost(ATTN, load_space("digits")).macs
    assert f"exact {exact:,} MACs" in res.output
    assert "thop counts less in 1 module(s) (65,536 MACs in all): GlobalAttention" in res.output


def test_cli_without_compare_prints_the_exact_totals(tmp_path) -> None:
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(ATTN.to_dict()))
    res = runner.invoke(app, ["cost", "digits", "--arch", str(path)])
    assert res.exit_code == 0, res.output
    cost = arch_cost(ATTN, load_space("digits"))
    assert f"{cost.macs:,} MACs per sample" in res.output
    assert f"{cost.params:,} parameters" in res.output
    assert "thop" not in res.output.replace("thop-style", "")


def test_cli_counts_an_exported_file_from_its_config(tmp_path) -> None:
    space = load_space("digits")
    out = tmp_path / "net.py"
    write_export(ATTN, space, out)
    assert exported_config(out) == space.net_cfg(ATTN)
    res = runner.invoke(app, ["cost", str(out), "--compare"])
    assert res.exit_code == 0, res.output
    assert f"exact {arch_cost(ATTN, space).macs:,} MACs" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["digits"], "space 'digits' holds many networks; pass --arch JSON"),
        (["nope", "--arch", "{}"], "unknown search space 'nope'; allowed: 'cifar10',"),
        (["digits", "--arch", "nofile"], "--arch must be JSON or a .json file, got 'nofile'"),
        (["digits", "--trial", "3"], "--trial needs --search NAME"),
        (["missing.py"], "exported file 'missing.py' does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    res = runner.invoke(app, ["cost", *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_a_python_file_without_config_literal_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.py"
    path.write_text("import os\nCONFIG = os.system('echo hi')\n")
    with pytest.raises(CostError, match="has no CONFIG = NetCfg"):
        exported_config(path)


def test_cli_counts_a_trial_of_a_stored_search(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    res = runner.invoke(
        app,
        ["search", "digits", "--dataset", "synthetic", "--trials", "2", "--epochs", "1",
         "--strategy", "optuna:random", "--name", "c", "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    from fusion_nas.store.store import Store

    row = Store(url).trials("c").iloc[1]
    res = runner.invoke(app, ["cost", "--search", "c", "--trial", "1", "--store", url])
    assert res.exit_code == 0, res.output
    assert f"{int(row.macs):,} MACs per sample" in res.output
    res = runner.invoke(app, ["cost", "--search", "c", "--trial", "7", "--store", url])
    assert res.exit_code == 2 and "7" in res.output
