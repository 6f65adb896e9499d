"""``explain`` on video networks: kind, trilinear Grad-CAM, which branch reaches across frames
and its share, frame-to-frame attention maps, figures."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from fusion_nas.analysis.explain import _token_map, explain_model, grad_cam, reaches_frames
from fusion_nas.analysis.explain_figures import explain_figures
from fusion_nas.model import nets
from fusion_nas.web.report import explain_html

b = nets.BlockCfg
SIZE = (4, 6, 5)  # (T, H, W)
runner = CliRunner()


def video_net(*blocks: nets.BlockCfg, classes: int = 3) -> nets.FusionNet:
    torch.manual_seed(0)
    stages = tuple(nets.StageCfg(blk) for blk in blocks)
    cfg = nets.NetCfg(in_channels=3, size=SIZE, classes=classes, stem_width=8, stages=stages)
    return nets.FusionNet(cfg)


def dbl(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.double)


def clips(n: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(n, 3, *SIZE), torch.arange(n) % 3


FUSED = (
    b("parallel", 8, heads=2, attention="temporal", pos="bias"),  # attention across frames
    b("gated", 8, heads=2, attention="spatial", pos="none", tkernel=3),  # conv across frames
    b("split", 8, heads=2, attention="divided", pos="none", tkernel=3),  # both
    b("parallel", 8, heads=2, attention="spatial", pos="bias"),  # none
)


def test_video_explanation_kind_cam_and_fusion() -> None:
    x, y = clips()
    expl = explain_model(video_net(*FUSED), x, y, samples=2)
    assert expl.kind == "video" and expl.saliency.kind == "video"
    assert torch.tensor(expl.saliency.maps).shape == (2, *SIZE)  # (K, T, H, W)
    assert expl.saliency.input_grad is None
    assert [f.temporal for f in expl.fusion] == ["attention", "conv", "both", "none"]
    for f in expl.fusion:
        conv = torch.tensor(f.weights["conv_share"].mean)
        want = {"attention": 1 - conv, "conv": conv, "both": 1.0, "none": 0.0}[f.temporal]
        assert f.weights["temporal_share"].mean == pytest.approx(float(want), abs=1e-6)
        assert len(f.per_class["temporal_share"]) == 3 and "temporal_share" in f.eta2
    json.dumps(expl.to_dict())


def test_images_have_no_temporal_fields() -> None:
    cfg = nets.NetCfg(
        in_channels=1,
        size=(6, 6),
        classes=2,
        stem_width=4,
        stages=(nets.StageCfg(b("parallel", 4, heads=2)),),
    )
    expl = explain_model(nets.FusionNet(cfg), torch.randn(4, 1, 6, 6), torch.arange(4) % 2)
    assert expl.kind == "image" and expl.fusion[0].temporal == ""
    assert "temporal_share" not in expl.fusion[0].weights


@pytest.mark.parametrize(
    ("block", "want"),
    [
        (b("parallel", 8, attention="temporal"), "attention"),
        (b("parallel", 8, attention="divided", pos="none"), "attention"),
        (b("parallel", 8, attention="global"), "attention"),
        (b("parallel", 8, attention="linear"), "attention"),
        (b("parallel", 8, attention="window", window=2), "attention"),
        (b("gated", 8, attention="grid", window=2, tkernel=3), "both"),
        (b("parallel", 8, attention="spatial", pos="none"), "none"),
        (b("parallel", 8, attention="spatial", pos="cpe"), "attention"),  # 3x3x3 depthwise
        (b("parallel", 8, attention="channel", tkernel=3), "conv"),
        (b("parallel", 8, attention="window", window=1), "none"),  # one frame per window
    ],
)
def test_which_branch_reaches_across_frames(block: nets.BlockCfg, want: str) -> None:
    assert reaches_frames(nets.OPS[block.operator](block, SIZE)) == want


def test_grad_cam_on_video_is_trilinear_over_the_clip() -> None:
    net = video_net(b("conv", 8), b("conv", 16))
    net.stages[1][0] = torch.nn.Sequential(nets.avgpool_nd(3)((2, 2, 2)), net.stages[1][0])
    x, _ = clips(2)
    cam, _, _ = grad_cam(net, x)
    assert cam.shape == (2, *SIZE) and float(cam.min()) >= 0 and float(cam.max()) <= 1


def attn_maps(*blocks: nets.BlockCfg, samples: int = 2):
    x, y = clips()
    return explain_model(video_net(*blocks), x, y, samples=samples).attention


def temporal_probs_by_hand(mixer: nets.TemporalAttention, x: torch.Tensor) -> torch.Tensor:
    """(T, T): plain softmax over each position's frames, looped, mean over everything."""
    B, C, T, H, W = x.shape
    qkv = mixer.qkv(mixer.norm(nets.to_tokens(x + mixer.pos))).reshape(B, T, H * W, 3 * C)
    total, count = torch.zeros(T, T), 0
    for bi in range(B):
        for p in range(H * W):
            q, k, _ = qkv[bi, :, p].chunk(3, dim=-1)  # (T, C) each
            for h in range(mixer.heads):
                s = slice(h * C // mixer.heads, (h + 1) * C // mixer.heads)
                logits = q[:, s] @ k[:, s].T / math.sqrt(C // mixer.heads)
                total += logits.softmax(-1)
                count += 1
    return total / count


def test_temporal_map_is_the_frame_to_frame_softmax() -> None:
    maps = attn_maps(b("attention", 8, heads=2, attention="temporal"))
    (amap,) = maps
    assert amap.what == "frames" and amap.size == (SIZE[0],) and amap.variant == "temporal"
    net = video_net(b("attention", 8, heads=2, attention="temporal")).eval()
    x, _ = clips()
    kept = {}
    net.stages[0][1].attn.register_forward_pre_hook(lambda m, a: kept.setdefault("x", a[0]))
    with torch.no_grad():
        net(x[:2])
        want = temporal_probs_by_hand(net.stages[0][1].attn, kept["x"])
    torch.testing.assert_close(dbl(amap.matrix), want.double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        dbl(amap.matrix).sum(1), torch.ones(4, dtype=torch.double), atol=1e-3, rtol=0
    )


def test_divided_gives_a_frames_map_and_a_frame_token_map() -> None:
    time, space = attn_maps(b("attention", 8, heads=2, attention="divided", pos="bias"))
    assert (time.variant, time.what, time.size) == ("divided.time", "frames", (4,))
    assert (space.variant, space.what, space.size) == ("divided.space", "tokens", (6, 5))
    assert torch.tensor(space.matrix).shape == (30, 30)
    assert torch.tensor(space.received).shape == (6, 5)


def test_spatial_map_is_per_frame_attention() -> None:
    (amap,) = attn_maps(b("attention", 8, heads=2, attention="spatial", pos="none"))
    assert (amap.what, amap.size) == ("tokens", (6, 5))
    m = dbl(amap.matrix)
    torch.testing.assert_close(m.sum(1), torch.ones(30, dtype=torch.double), atol=1e-3, rtol=0)


def test_global_on_video_gives_tokens_and_derived_frames() -> None:
    tokens, frames = attn_maps(b("attention", 8, heads=2, attention="global", pos="bias"))
    assert (tokens.what, tokens.size) == ("tokens", SIZE)
    assert (frames.what, frames.size, frames.variant) == ("frames", (4,), "global")
    full = dbl(tokens.matrix)  # (120, 120), rows sum to 1
    want = full.view(4, 30, 4, 30).sum(-1).mean(1)  # (T, T): per query frame, per key frame
    torch.testing.assert_close(dbl(frames.matrix), want, atol=1e-3, rtol=0)
    torch.testing.assert_close(
        dbl(frames.matrix).sum(1), torch.ones(4, dtype=torch.double), atol=1e-3, rtol=0
    )


@pytest.mark.parametrize("variant", ["global", "window", "grid"])
def test_token_maps_with_relative_bias_reproduce_the_mixer(variant: str) -> None:
    """pos="bias": the map adds the bias the mixer adds (grid windows interleaved)."""
    cfg = b("attention", 8, heads=2, attention=variant, pos="bias", window=2)
    mixer = nets.ATTENTIONS[variant](cfg, SIZE).eval()
    with torch.no_grad():
        mixer.rel.table.normal_()  # a bias that matters
        x = torch.randn(2, 8, *SIZE)
        qkv = mixer.qkv(mixer.norm(nets.to_tokens(x)))
        probs, _ = _token_map(mixer, qkv)  # (B, h, N, N)
        v = nets.split_heads(qkv.chunk(3, dim=-1)[2], 2)
        got = (probs @ v).transpose(1, 2).flatten(2)
        torch.testing.assert_close(got, mixer.attend(qkv), atol=1e-5, rtol=1e-4)


def test_figures_of_a_video_explanation() -> None:
    x, y = clips()
    blocks = (*FUSED[:3], b("attention", 8, heads=2, attention="global"))
    expl = explain_model(video_net(*blocks), x, y, samples=2)
    figs = explain_figures(expl)
    keys = [k for k in figs if k.startswith("attention:")]
    assert len(keys) == len(expl.attention) == 6  # every map its own figure
    assert "attention:s2.b0:divided.space:tokens" in keys
    assert "attention:s3.b0:global:frames" in keys
    sal = figs["saliency"]
    assert len(sal.data) == 2 * 2 * SIZE[0]  # per sample: T input frames and T maps
    assert "temporal_share" in json.dumps(figs["classes"].to_plotly_json())
    fusion = figs["fusion"].to_plotly_json()
    assert any("across frames" in t["name"] for t in fusion["data"])
    assert "across frames: attention" in json.dumps(fusion)
    frames = figs["attention:s0.b0"].to_plotly_json()
    assert "query frame x key frame" in json.dumps(frames)
    assert "<script>" not in explain_html(expl, title="v", plotly_js="/*p*/").split("<body")[0]


def test_cli_tables_show_the_temporal_share() -> None:
    from fusion_nas.cli.common import console
    from fusion_nas.cli.explain import _tables

    x, y = clips()
    expl = explain_model(video_net(*FUSED), x, y, samples=2)
    with console.capture() as cap:
        for table in _tables(expl):
            console.print(table)
    text = cap.get()
    assert "temporal share" in text and "across frames" in text and "frame " in text


TINY_VIDEO = """
name = "tiny-video"
description = "4 frames of 8x8 glyph clips: one fused stage"
[input]
kind = "video"
size = [4, 8, 8]
channels = 1
classes = 6
[stem]
width = 8
kernel = 3
stride = 2
[[stage]]
operator = ["parallel"]
kernel = [3]
tkernel = [3]
heads = [2]
attention = ["divided"]
pos = ["bias"]
width = [8]
"""


def test_cli_explains_a_trial_of_a_video_search(tmp_path) -> None:
    from fusion_nas.cli.app import app

    space = tmp_path / "tiny-video.toml"
    space.write_text(TINY_VIDEO)
    url = f"sqlite:///{tmp_path}/s.db"
    res = runner.invoke(
        app,
        ["search", str(space), "--dataset", "video-glyphs", "--trials", "1", "--epochs", "1",
         "--train-subset", "256", "--name", "vid", "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "vid.html"
    res = runner.invoke(
        app, ["explain", "vid", "--trial", "0", "--samples", "2", "--out", str(out),
              "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "temporal share" in text and "divided.time" in text and "frame " in text
    page = out.read_text()
    assert "query frame x key frame" in page and "attention:s0.b0:divided.space:tokens" in page
