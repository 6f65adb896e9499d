"""``fusion_nas.analysis.explain`` and ``fusion-nas explain``: fusion weights, cost, Grad-CAM,
attention."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from fusion_nas.analysis.explain import (
    ExplainError,
    _token_map,
    explain_model,
    grad_cam,
    stage_costs,
)
from fusion_nas.analysis.explain_figures import explain_figures
from fusion_nas.cli.app import app
from fusion_nas.model import nets
from fusion_nas.model.cost import count_cost
from fusion_nas.web.report import explain_html

runner = CliRunner()

TINY_SPACE = """
name = "tiny-fused"
description = "one parallel and one gated stage"

[input]
kind = "image"
size = [8, 8]
channels = 1
classes = 4

[stem]
width = 8
kernel = 3

[[stage]]
operator = ["parallel"]
kernel = [3]
heads = [2]
attention = ["global"]
width = 8

[[stage]]
operator = ["gated"]
kernel = [3]
heads = [1]
attention = ["window"]
width = 8
"""


def fused_net(classes: int = 2) -> nets.FusionNet:
    """stem -> parallel(global) -> gated(window) -> conv (pooled), on 8x8 images."""
    b = nets.BlockCfg
    cfg = nets.NetCfg(
        in_channels=1,
        size=(8, 8),
        classes=classes,
        stem_width=4,
        stages=(
            nets.StageCfg(b("parallel", 4, heads=2, attention="global")),
            nets.StageCfg(b("gated", 4, attention="window", window=2)),
            nets.StageCfg(b("conv", 8), downsample="pool"),
        ),
    )
    return nets.FusionNet(cfg)


def test_explain_returns_the_fusion_weights_set_by_hand() -> None:
    model = fused_net()
    parallel, gated = model.stages[0][1], model.stages[1][1]
    a, b = torch.tensor([0.5, -1.0, 2.0, 0.25]), torch.tensor([1.5, 0.0, -0.5, 3.0])
    gate = torch.tensor([0.2, 0.4, 0.6, 0.9])
    with torch.no_grad():
        parallel.conv_weight.copy_(a)
        parallel.attn_weight.copy_(b)
        gated.gate.weight.zero_()  # the gate no longer depends on the input: g = sigmoid(bias)
        gated.gate.bias.copy_(torch.logit(gate))
        gated.scale.fill_(0.7)
    x, y = torch.randn(40, 1, 8, 8), torch.arange(40) % 2
    expl = explain_model(model, x, y, samples=2)

    par, gat = expl.fusion
    assert (par.stage, par.block, par.operator, par.attention) == (0, 0, "parallel", "global")
    assert par.channels["a"] == pytest.approx(a.tolist())
    assert par.channels["b"] == pytest.approx(b.tolist())
    assert par.weights["a"].mean == pytest.approx(float(a.mean()))
    assert par.weights["b"].std == pytest.approx(float(b.std(unbiased=False)), rel=1e-5)
    assert (gat.stage, gat.operator, gat.attention) == (1, "gated", "window")
    assert gat.channels["g"] == pytest.approx(gate.tolist(), abs=1e-6)
    assert gat.weights["g"].mean == pytest.approx(float(gate.mean()), abs=1e-6)
    assert gat.weights["g"].std == pytest.approx(0.0, abs=1e-6)  # same gate for every sample
    assert gat.weights["s"].mean == pytest.approx(0.7)
    assert not gat.differs("g")
    assert expl.val_samples == 40 and len(expl.saliency.maps) == 2


def test_a_gate_that_depends_on_the_class_is_reported_per_class() -> None:
    model = fused_net()
    gated = model.stages[1][1]
    with torch.no_grad():
        for m in model.stem.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(0.1)
                m.bias.zero_()
        gated.gate.weight.copy_(torch.eye(4) * 5.0)
        gated.gate.bias.zero_()
    model.stages[0][1].attn_weight.data.zero_()
    model.stages[0][1].conv_weight.data.zero_()  # stage 0 passes the stem's map through
    y = torch.arange(60) % 2
    x = torch.randn(60, 1, 8, 8) * 0.1 + 3.0 * y.view(-1, 1, 1, 1)  # class 1 is bright
    gat = explain_model(model, x, y).fusion[1]
    dark, bright = gat.per_class["g"]
    assert bright > dark + 0.2
    assert gat.differs("g") and gat.eta2["g"] > 0.9


def region_data(
    n: int, size: tuple[int, ...], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise inputs; class 1 also has a zero-mean checkerboard of 3 pixels per axis in the
    first corner (zero mean, so the overall brightness tells nothing)."""
    x = torch.randn(n, 1, *size, generator=generator)
    y = torch.arange(n) % 2
    if len(size) == 2:
        pattern = (torch.arange(3)[:, None] + torch.arange(3)[None, :]) % 2 * 2.0 - 1.0
        x[y == 1, 0, :3, :3] += 2.0 * pattern
    else:
        x[y == 1, 0, :3] += 2.0 * torch.tensor([1.0, -1.0, 1.0])
    return x, y


@pytest.mark.parametrize("size", [(8, 8), (24,)])
def test_grad_cam_peaks_where_the_label_is_decided(size: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    b = nets.BlockCfg
    cfg = nets.NetCfg(
        in_channels=1, size=size, classes=2, stem_width=8,
        stages=(nets.StageCfg(b("conv", 8, kernel=3)), nets.StageCfg(b("conv", 8, kernel=3))),
    )  # fmt: skip
    model = nets.FusionNet(cfg)
    x, y = region_data(512, size, g)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    xv, yv = region_data(200, size, g)
    model.eval()
    with torch.no_grad():
        assert (model(xv).argmax(1) == yv).float().mean() > 0.9  # it learned the rule
    cam, _, stage = grad_cam(model, xv[yv == 1][:32], target=torch.ones(32, dtype=torch.long))
    assert stage == 1 and cam.shape == (32, *size)
    inside = torch.zeros(size, dtype=torch.bool)
    inside[(slice(0, 4),) * len(size)] = True  # the patch and the rim its 3-wide convs reach
    assert cam[:, inside].mean() > 2.5 * cam[:, ~inside].mean()
    peaks = cam.flatten(1).argmax(1)
    assert inside.flatten()[peaks].float().mean() >= 0.8


def test_sequences_get_grad_cam_and_input_gradients() -> None:
    b = nets.BlockCfg
    cfg = nets.NetCfg(
        in_channels=2, size=(16,), classes=3, stem_width=4,
        stages=(nets.StageCfg(b("gated", 4, attention="linear")),
                nets.StageCfg(b("attention", 8, heads=2), downsample="conv")),
    )  # fmt: skip
    expl = explain_model(nets.FusionNet(cfg), torch.randn(9, 2, 16), torch.arange(9) % 3, samples=3)
    sal = expl.saliency
    assert sal.kind == "sequence" and sal.stage == 1
    assert torch.tensor(sal.maps).shape == (3, 16) == torch.tensor(sal.input_grad).shape
    assert torch.tensor(sal.inputs).shape == (3, 2, 16)
    assert [a.variant for a in expl.attention] == ["linear", "global"]
    assert torch.tensor(expl.attention[1].matrix).shape == (8, 8)  # stride-2 stage: 8 tokens
    assert "implicit" in expl.attention[0].note


@pytest.mark.parametrize(
    ("variant", "size"),
    [("global", (4, 4)), ("window", (5, 7)), ("linear", (6,)), ("window", (9,))],
)
def test_attention_maps_reproduce_the_mixer_output(variant: str, size: tuple[int, ...]) -> None:
    mixer = nets.ATTENTIONS[variant](nets.BlockCfg("attention", 8, heads=2, attention=variant,
                                                   window=3), size)  # fmt: skip
    x = torch.randn(3, 8, *size)
    qkv = mixer.qkv(mixer.norm(nets.to_tokens(x + mixer.pos)))  # (B, N, 3C)
    probs, _ = _token_map(mixer, qkv)  # (B, h, N, N)
    v = nets.split_heads(qkv.chunk(3, dim=-1)[2], 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    torch.testing.assert_close(
        (probs @ v).transpose(1, 2).flatten(2), mixer.attend(qkv), atol=1e-5, rtol=1e-4
    )


def test_stage_costs_add_up_to_the_network_cost() -> None:
    model = fused_net()
    rows = stage_costs(model)
    total = count_cost(model, torch.zeros(1, 1, 8, 8))
    assert [r.name for r in rows] == ["stem", "stage 0", "stage 1", "stage 2", "head"]
    assert sum(r.macs for r in rows) == total.macs
    assert sum(r.params for r in rows) == total.params
    par = rows[1]
    assert par.parts["attention"][0] > 0 and par.parts["conv"][0] > 0
    assert sum(m for m, _ in par.parts.values()) == par.macs
    assert par.parts["fusion"] == (0, 8)  # a and b: 4 channels each, no MACs


def test_figures_and_page_of_an_explanation() -> None:
    model = fused_net()
    expl = explain_model(model, torch.randn(10, 1, 8, 8), torch.arange(10) % 2, samples=3)
    figs = explain_figures(expl)
    assert list(figs)[:4] == ["fusion", "classes", "cost", "saliency"]
    assert {"attention:s0.b0", "attention:s1.b0"} <= set(figs)
    page = explain_html(expl, title="<b>x</b>", plotly_js="/*plotly*/")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    data = re.search(r'id="figure-data">(.*?)</script>', page, re.S).group(1)
    assert set(json.loads(data)) == set(figs)


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("explain")
    space = root / "tiny.toml"
    space.write_text(TINY_SPACE)
    url = f"sqlite:///{root}/s.db"
    res = runner.invoke(
        app,
        ["search", str(space), "--dataset", "synthetic", "--trials", "1", "--epochs", "1",
         "--name", "ex", "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return url


def test_cli_writes_the_html_and_prints_the_tables(searched: str, tmp_path) -> None:
    out = tmp_path / "inside.html"
    res = runner.invoke(
        app, ["explain", "ex", "--trial", "0", "--samples", "2", "--out", str(out),
              "--store", searched],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "proxy training re-run" in res.output
    for title in ("Where the cost goes", "Fusion per block", "Attention maps", "Grad-CAM"):
        assert title in res.output
    assert "s0.b0 parallel(global)" in res.output and "s1.b0 gated(window)" in res.output
    page = out.read_text()
    data = json.loads(re.search(r'id="figure-data">(.*?)</script>', page, re.S).group(1))
    assert {"fusion", "cost", "saliency", "attention:s0.b0"} <= set(data)
    assert len(data["saliency"]["data"]) == 4  # two samples: input and map each


def test_cli_weights_file_is_used(searched: str, tmp_path) -> None:
    from fusion_nas.model.build import build_model
    from fusion_nas.store.store import Store

    search = Store(searched, create=False).search("ex")
    model = build_model(search.trial(0).architecture(), search.space)
    with torch.no_grad():
        model.stages[0][1].conv_weight.fill_(0.625)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    res = runner.invoke(
        app, ["explain", "ex", "--trial", "0", "--weights", str(weights),
              "--out", str(tmp_path / "e.html"), "--store", searched],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "0.625 ± 0.000" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--trial", "0"], "no search named 'nope'"),
        (["ex", "--trial", "7"], "trial 7 does not exist in search 'ex'; trials: 0..0"),
        (["ex", "--trial", "0", "--stage", "5"], "stage 5 has no blocks; allowed: 0, 1"),
        (["ex", "--trial", "0", "--out", "x.png"], "--out must name an .html file"),
        (["ex", "--trial", "0", "--weights", "missing.pt"], "weights file 'missing.pt' does not"),
        (["ex", "--trial", "0", "--out", "w.html", "--weights", "w.html"], "is the weights file"),
    ],
)
def test_cli_bad_input_is_one_line(searched: str, args: list[str], message: str) -> None:
    res = runner.invoke(app, ["explain", *args, "--store", searched])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_cli_refuses_an_unwritable_out_before_the_work(searched: str, tmp_path, monkeypatch):
    import fusion_nas.analysis.explain as explain_module

    def never(*args, **kw):
        raise AssertionError("explained before the output was checked")

    monkeypatch.setattr(explain_module, "explain_trial", never)
    plain = tmp_path / "plain"
    plain.write_text("a file, not a folder")
    out = plain / "e.html"
    res = runner.invoke(
        app, ["explain", "ex", "--trial", "0", "--out", str(out), "--store", searched]
    )
    assert res.exit_code == 2, res.output
    assert "is not a folder" in res.output and plain.read_text() == "a file, not a folder"


SKIP_SPACE = (
    TINY_SPACE.replace('name = "tiny-fused"', 'name = "tiny-skip"').replace(
        'attention = ["window"]\nwidth = 8\n', 'attention = ["window"]\nwidth = 8\ndepth = [0]\n'
    )
    + '\n[[stage]]\noperator = ["gated"]\nkernel = [3]\nheads = [1]\n'
    + 'attention = ["global"]\nwidth = 8\n'
)


def test_stage_numbers_follow_the_architecture_string() -> None:
    model = fused_net()
    numbers = [0, 2, 3]  # as if the architecture skipped stage 1
    expl = explain_model(
        model, torch.randn(6, 1, 8, 8), torch.arange(6) % 2, samples=2, numbers=numbers
    )
    assert [f.stage for f in expl.fusion] == [0, 2]
    assert [r.name for r in expl.costs] == ["stem", "stage 0", "stage 2", "stage 3", "head"]
    assert expl.saliency.stage == 3
    assert {"attention:s0.b0", "attention:s2.b0"} <= set(explain_figures(expl))
    with pytest.raises(ExplainError, match="stage 1 has no blocks; allowed: 0, 2, 3"):
        grad_cam(model, torch.randn(2, 1, 8, 8), 1, numbers=numbers)


def test_cli_keeps_the_number_of_a_stage_after_a_skipped_one(tmp_path) -> None:
    space = tmp_path / "skip.toml"
    space.write_text(SKIP_SPACE)
    url = f"sqlite:///{tmp_path}/s.db"
    res = runner.invoke(
        app,
        ["search", str(space), "--dataset", "synthetic", "--trials", "1", "--epochs", "1",
         "--name", "sk", "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "inside.html"
    res = runner.invoke(
        app, ["explain", "sk", "--trial", "0", "--samples", "2", "--out", str(out),
              "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "s2.b0 gated(global)" in res.output and "s1.b0" not in res.output
    assert "Grad-CAM on stage 2" in res.output
    data = json.loads(re.search(r'id="figure-data">(.*?)</script>', out.read_text(), re.S)[1])
    assert "attention:s2.b0" in data and "stage 2" in json.dumps(data["saliency"])
