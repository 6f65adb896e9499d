"""Export of video networks: the exported file equals the toolkit model (in this process and
standalone, without fusion_nas), and its ONNX export equals PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fusion_nas.deploy.export import write_export
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.space import SearchSpace, parse_space
from tests.deploy import test_export
from tests.deploy.test_export import EQUIV_ATOL, RUNNER, _assert_equivalent, _built
from tests.helpers.standalone import export_case, run_isolated

VIDEO = """
name = "video-tiny"
description = "4 frames of 8x8: every video operator and attention variant"
[input]
kind = "video"
size = [4, 8, 8]
channels = 3
classes = 4
[network]
mlp_ratio = 1.0
window = 2
[stem]
width = 8
kernel = 3
stride = 2
[[stage]]
operator = ["conv", "r2plus1d", "attention", "parallel", "gated", "split"]
kernel = [3]
heads = [2]
attention = ["temporal", "divided", "global", "spatial"]
pos = ["learned", "bias"]
tkernel = [1, 3]
width = [8]
[[stage]]
operator = ["conv", "attention", "gated"]
heads = [2]
attention = ["window", "temporal"]
tkernel = [1, 3]
width = [16]
downsample = ["conv", "pool"]
"""

FUSED_OPS = ("attention", "parallel", "gated", "split")
VARIANTS = ("temporal", "divided", "global", "spatial")


def video_space() -> SearchSpace:
    return parse_space(VIDEO)


def video_archs() -> list[Architecture]:
    """Every first-stage operator with tkernel 1 and 3, every variant with both position
    encodings, the second stage alternating window and temporal attention, conv and pool."""
    space = video_space()
    out = []
    firsts = [StageChoice("conv", 8, 1, kernel=3, tkernel=t) for t in (1, 3)]
    firsts += [StageChoice("r2plus1d", 8, 1, kernel=3, tkernel=t) for t in (1, 3)]
    for op in FUSED_OPS:
        for variant in VARIANTS:
            for pos, tk in (("learned", 3), ("bias", 1)):
                firsts.append(
                    StageChoice(op, 8, 1, kernel=3, heads=2, attention=variant, pos=pos, tkernel=tk)
                )
    for i, first in enumerate(firsts):
        second = StageChoice(
            ("gated", "attention", "conv")[i % 3],
            16,
            1,
            kernel=3,
            heads=2,
            attention=("window", "temporal")[i % 2],
            downsample=("conv", "pool")[i % 2],
            tkernel=(1, 3)[i % 2],
        )
        out.append(Architecture(space.name, (first, second)))
    return out


def test_video_space_parses_as_video() -> None:
    space = video_space()
    assert space.kind == "video" and space.input_shape(2) == (2, 3, 4, 8, 8)


def expected_blocks(arch: Architecture, space: SearchSpace) -> set[str]:
    """The classes an export holds: divided attention brings its temporal and spatial parts."""
    names = EXPECTED(arch, space)
    if "DividedAttention" in names:
        names |= {"TemporalAttention", "SpatialAttention"}
    return names


EXPECTED = test_export._expected_blocks


def test_exported_video_models_match_the_toolkit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_export, "_expected_blocks", expected_blocks)
    space = video_space()
    archs = video_archs()
    assert len({a.arch_id for a in archs}) == len(archs)  # no two build the same network
    for arch in archs:
        _assert_equivalent(arch, space, batch=2)
    for i, spec in enumerate(space.stages):  # every operator and variant of the space ran
        assert {a.stages[i].operator for a in archs} == set(spec.operator)
        assert {a.stages[i].attention for a in archs} - {None} == set(spec.attention)


CASES = {  # exported file name -> (first stage, second stage) operators and variants
    "divided": ("parallel", "divided"),
    "r2": ("r2plus1d", None),
    "split": ("split", "temporal"),
    "joint": ("gated", "global"),
    "frames": ("attention", "spatial"),
}


def case_arch(op: str, variant: str | None) -> Architecture:
    attn = {"heads": 2, "attention": variant, "pos": "bias"} if variant else {}
    first = StageChoice(op, 8, 1, kernel=3, tkernel=3, **attn)
    second = StageChoice("gated", 16, 1, 3, 2, "window", downsample="conv", tkernel=3)
    return Architecture("video-tiny", (first, second))


def test_exported_video_file_runs_without_fusion_nas(tmp_path: Path) -> None:
    space = video_space()
    expected = {}
    for name, (op, variant) in CASES.items():
        arch = case_arch(op, variant)
        model = _built(arch, space, seed=1)
        expected[name] = export_case(tmp_path, name, arch, space, model)
    got = run_isolated(RUNNER, list(CASES), tmp_path, timeout=300)
    for name, want in expected.items():
        assert want.abs().max() > 0.5  # logits of order 1: the tolerance is tight next to them
        assert torch.allclose(torch.tensor(got[name]), want, rtol=0, atol=1e-6), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_video_onnx_export_matches_pytorch(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    space = video_space()
    arch = case_arch(*CASES[name])
    model = _built(arch, space, seed=2)
    path = tmp_path / f"{name}.onnx"
    write_export(arch, space, tmp_path / f"{name}.py", state_dict=model.state_dict(), onnx=path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(space.input_shape(3))
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        want = model(x)
    assert want.abs().max() > 0.5
    assert torch.allclose(got, want, rtol=0, atol=EQUIV_ATOL)
