"""Export: generated source is standalone, equivalent to the toolkit model, lint-clean and safe."""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from fusion_nas.arch import Architecture, StageChoice
from fusion_nas.cost import count_cost
from fusion_nas.errors import ExportError
from fusion_nas.export import export_code, write_export
from fusion_nas.model import build_model
from fusion_nas.ops import ATTENTION_VARIANTS, list_ops
from fusion_nas.ops import registry as op_registry
from fusion_nas.space import SearchSpace, load_space, parse_space

REPO = Path(__file__).resolve().parent.parent
SMALL_SPACES = ("mnist1d", "digits", "fashion-mnist")
OPERATOR_CLASSES = {
    "conv": "ConvBlock",
    "attention": "AttentionBlock",
    "parallel": "ParallelBlock",
    "gated": "GatedBlock",
}

# Custom spaces that exercise what the built-in ones do not: window padding on every axis (and a
# window larger than an axis), depth > 1, a width change without downsampling.
PADDED_1D = """
name = "padded-1d"
description = "length 37: windows of 5 need padding"
[input]
kind = "sequence"
length = 37
channels = 2
classes = 3
[network]
mlp_ratio = 1.5
window = 5
[stem]
width = 8
kernel = 3
stride = 1
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
heads = [1, 2]
attention = ["global", "window", "linear"]
width = [8, 12]
depth = [1, 2]
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3, 5]
heads = [2, 4]
attention = ["global", "window", "linear"]
width = [16]
depth = [2]
downsample = true
window = 7
"""

PADDED_2D = """
name = "padded-2d"
description = "9x7 images: windows of 4 need padding on both axes; 3x4 after pooling"
[input]
kind = "image"
size = [9, 7]
channels = 3
classes = 4
[network]
mlp_ratio = 2.0
window = 4
[stem]
width = 8
kernel = 3
stride = 1
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3, 5]
heads = [1, 2]
attention = ["global", "window", "linear"]
width = [8, 12]
depth = [1, 2]
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3]
heads = [2, 4]
attention = ["global", "window", "linear"]
width = [16]
depth = [1, 2]
downsample = true
window = 5
"""


def _space(name: str) -> SearchSpace:
    if name == "padded-1d":
        return parse_space(PADDED_1D)
    if name == "padded-2d":
        return parse_space(PADDED_2D)
    return load_space(name)


def _uniform_archs(space: SearchSpace) -> list[Architecture]:
    """Every operator in every stage, once per attention variant (falling back per stage)."""
    archs = []
    for op in list_ops():
        for variant in ATTENTION_VARIANTS:
            stages = []
            for spec in space.stages:
                ops = spec.operator
                stages.append(
                    StageChoice(
                        operator=op if op in ops else ops[0],
                        width=spec.width[-1],
                        depth=spec.depth[-1],
                        kernel=spec.kernel[-1],
                        heads=spec.heads[-1],
                        attention=variant if variant in spec.attention else spec.attention[0],
                    )
                )
            archs.append(Architecture(space.name, tuple(stages)))
    unique = {a.arch_id: a for a in archs}
    return list(unique.values())


def _window_arch(space: SearchSpace, ops: tuple[str, ...]) -> Architecture:
    """One stage per operator in ``ops``, all with window attention (two heads)."""
    stages = [
        StageChoice(op, spec.width[-1], spec.depth[-1], spec.kernel[0], 2, "window")
        for op, spec in zip(ops, space.stages)
    ]
    return Architecture(space.name, tuple(stages))


def _archs(space: SearchSpace, samples: int, seed: int = 0) -> list[Architecture]:
    rng = random.Random(seed)
    return _uniform_archs(space) + [space.sample(rng) for _ in range(samples)]


def _load(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "exported_under_test"}
    exec(compile(source, "<exported>", "exec"), namespace)
    return namespace


def _covered(arch: Architecture, dim: int) -> set[tuple[Any, ...]]:
    return {(dim, s.operator, s.attention) for s in arch.stages}


def _assert_equivalent(
    arch: Architecture, space: SearchSpace, batch: int, source: str | None = None
) -> None:
    source = source if source is not None else export_code(arch, space)
    blocks = {n for n in _top_level(source) if n.endswith("Block")}
    assert blocks == {OPERATOR_CLASSES[s.operator] for s in arch.stages}  # only the used ones
    generated = _load(source)["FusionNet"]()
    toolkit = build_model(arch, space)
    got = {k: tuple(v.shape) for k, v in generated.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in toolkit.state_dict().items()}
    assert got == want, arch.describe()
    assert list(got) == list(want)  # same registration order, too
    assert sum(p.numel() for p in generated.parameters()) == sum(
        p.numel() for p in toolkit.parameters()
    )
    generated.load_state_dict(toolkit.state_dict(), strict=True)
    generated.eval()
    toolkit.eval()
    x = torch.randn(space.input_shape(batch))
    with torch.no_grad():
        want_out = toolkit(x)
    # count_cost runs the generated model once (eval, no_grad): take its output from a hook
    outputs: list[torch.Tensor] = []
    handle = generated.register_forward_hook(lambda m, args, out: outputs.append(out))
    macs = count_cost(generated, x).macs
    handle.remove()
    got_out = outputs[0]
    assert got_out.shape == (batch, space.classes)
    assert torch.allclose(got_out, want_out, atol=1e-6), arch.describe()
    # The docstring gives count_cost of the toolkit model for one sample; MACs scale with batch.
    per_sample = _docstring_macs(source)
    assert macs == batch * per_sample, arch.describe()


def _docstring_macs(source: str) -> int:
    words = " ".join(source.split()).split(" MACs")[0].split()
    return int(words[-1].replace(",", ""))


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("name", [*SMALL_SPACES, "padded-1d", "padded-2d"])
def test_generated_model_matches_toolkit(name: str) -> None:
    space = _space(name)
    archs = _archs(space, samples=4)
    for arch in archs:
        _assert_equivalent(arch, space, batch=3)
    # the list above really exercises every operator and, where the space allows, every variant
    ops = {s.operator for a in archs for s in a.stages}
    variants = {s.attention for a in archs for s in a.stages} - {None}
    assert ops == set(list_ops())
    assert variants == {v for spec in space.stages for v in spec.attention}


def test_space_defaults_to_the_builtin_one() -> None:
    space = load_space("digits")
    arch = space.sample(2)
    assert export_code(arch) == export_code(arch, space)


def test_docstring_macs_are_toolkit_cost() -> None:
    space = load_space("digits")
    arch = space.sample(3)
    cost = count_cost(build_model(arch, space), torch.zeros(space.input_shape(1)))
    text = " ".join(export_code(arch, space).split())
    assert f"{cost.macs:,} MACs" in text
    assert f"{cost.params:,} parameters" in text


@pytest.mark.slow
def test_coatnet_like_matches_toolkit() -> None:
    space = load_space("coatnet-like")
    # every operator and every variant the space allows, in one 224x224 network
    full = Architecture(
        space.name,
        (
            StageChoice("gated", 64, 1, 3, 2, "window"),
            StageChoice("parallel", 192, 2, 3, 4, "linear"),
            StageChoice("attention", 384, 4, None, 8, "global"),
            StageChoice("conv", 768, 2, 3),
        ),
    )
    _assert_equivalent(full, space, batch=1)
    # two more, structure only (built on the meta device: no weights, no forward pass)
    others = [
        Architecture(
            space.name,
            (
                StageChoice("conv", 96, 2, 5),
                StageChoice("attention", 192, 3, None, 6, "window"),
                StageChoice("gated", 384, 5, 3, 12, "linear"),
                StageChoice("parallel", 768, 2, 3, 32, "global"),
            ),
        ),
        space.sample(11),
    ]
    for arch in others:
        namespace = _load(export_code(arch, space))
        with torch.device("meta"):
            generated, toolkit = namespace["FusionNet"](), build_model(arch, space)
        got = [(k, tuple(v.shape)) for k, v in generated.state_dict().items()]
        assert got == [(k, tuple(v.shape)) for k, v in toolkit.state_dict().items()]


def test_every_operator_and_variant_is_covered_in_1d_and_2d() -> None:
    covered: set[tuple[Any, ...]] = set()
    for name in [*SMALL_SPACES, "padded-1d", "padded-2d"]:
        space = _space(name)
        for arch in _uniform_archs(space):
            covered |= _covered(arch, space.dim)
    for dim in (1, 2):
        assert (dim, "conv", None) in covered
        for op in ("attention", "parallel", "gated"):
            for variant in ATTENTION_VARIANTS:
                assert (dim, op, variant) in covered


def test_same_seed_gives_same_initial_weights() -> None:
    space = _space("padded-2d")
    for arch in _uniform_archs(space)[::3]:
        namespace = _load(export_code(arch, space))
        torch.manual_seed(7)
        toolkit = build_model(arch, space).state_dict()
        torch.manual_seed(7)
        generated = namespace["FusionNet"]().state_dict()
        assert all(torch.equal(toolkit[k], generated[k]) for k in toolkit)


def test_export_leaves_the_global_rng_alone() -> None:
    space = load_space("mnist1d")
    before = torch.get_rng_state()
    export_code(space.sample(1), space)
    assert torch.equal(before, torch.get_rng_state())


# --------------------------------------------------------------------------- what is generated


def _top_level(source: str) -> list[str]:
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            out.append(node.name)
        elif isinstance(node, ast.Import):
            out += [f"import {a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out += [f"from {node.module} import {a.name}" for a in node.names]
    return out


def _methods(source: str, cls: str) -> set[str]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return set()


def test_conv_only_architecture_has_no_attention_code() -> None:
    space = load_space("mnist1d")
    arch = Architecture(
        space.name, tuple(StageChoice("conv", s.width[0], 1, 3) for s in space.stages)
    )
    source = export_code(arch, space)
    assert _top_level(source) == [
        "import torch",
        "from torch import nn",
        "ConvMixer",
        "ConvBlock",
        "transition",
        "FusionNet",
    ]
    for word in ("Attention", "Mlp", "scaled_dot_product_attention", "Gated", "Parallel"):
        assert word not in source.split('"""', 2)[2]  # the code below the docstring


def test_only_the_used_operators_and_variants_are_generated() -> None:
    space = load_space("fashion-mnist")
    arch = Architecture(
        space.name,
        (
            StageChoice("gated", 32, 1, 3, 2, "window"),
            StageChoice("attention", 48, 1, None, 2, "window"),
            StageChoice("gated", 64, 1, 3, 2, "linear"),
        ),
    )
    source = export_code(arch, space)
    assert _top_level(source) == [
        "import torch",
        "import torch.nn.functional",
        "from torch import nn",
        "Mlp",
        "ConvMixer",
        "AttentionMixer",
        "AttentionBlock",
        "GatedBlock",
        "transition",
        "FusionNet",
    ]
    assert _methods(source, "AttentionMixer") == {
        "__init__",
        "split_heads",
        "window_attention",
        "partition",
        "linear_attention",
        "forward",
    }
    single = Architecture(
        space.name,
        (
            StageChoice("attention", 16, 1, None, 1, "linear"),
            StageChoice("attention", 32, 1, None, 2, "linear"),
            StageChoice("parallel", 64, 1, 3, 2, "linear"),
        ),
    )
    source = export_code(single, space)
    assert _methods(source, "AttentionMixer") == {
        "__init__",
        "split_heads",
        "linear_attention",
        "forward",
    }
    assert "variant" not in source and "window" not in source.split('"""', 2)[2]
    assert "ConvBlock" not in _top_level(source)


def test_docstring_describes_architecture_and_meta() -> None:
    space = load_space("fashion-mnist")
    arch = Architecture(
        space.name,
        (
            StageChoice("gated", 32, 1, 5, 2, "window"),
            StageChoice("conv", 48, 1, 3),
            StageChoice("parallel", 64, 1, 3, 4, "linear"),
        ),
    )
    meta = {
        "val_accuracy": 0.91234,
        "search": "fm-pareto",
        "trial": 17,
        "store_url": "postgresql://alice:s3cret@db.example/nas",
        "weights_file": "best.pt",
    }
    doc = ast.get_docstring(ast.parse(export_code(arch, space, meta=meta)))
    assert doc is not None
    flat = " ".join(doc.split())
    for text in (
        arch.arch_id,
        "fashion-mnist",
        "Fashion-MNIST 28x28 grey images",
        "Input (B, 1, 28, 28) -> logits (B, 10)",
        "stage operator kernel heads attention width depth size",
        "stem conv 3 - - 16 - 14x14",
        "0 gated 5 2 window(7) 32 1 14x14",
        "1 conv 3 - - 48 1 7x7",
        "2 parallel 3 4 linear 64 1 3x3",
        "Validation accuracy: 0.9123",
        "Search: fm-pareto",
        "Trial: 17",
        "postgresql://alice:***@db.example/nas",
        'model.load_state_dict(torch.load("best.pt", weights_only=True))',
    ):
        assert text in flat, text
    assert "s3cret" not in doc


def _ruff() -> list[str] | None:
    if subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode:
        exe = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
        return [exe] if exe else None
    return [sys.executable, "-m", "ruff"]


HUGE = """
name = "huge"
[input]
kind = "image"
size = [13, 11]
channels = 1
classes = 123456
[stem]
width = 12
[[stage]]
operator = ["attention"]
heads = [12]
attention = ["window"]
width = [12]
window = 100000
[[stage]]
operator = ["gated"]
heads = [12]
attention = ["window", "linear"]
width = [120000]
downsample = true
window = 1000
"""


def test_generated_code_is_ruff_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    # large values must still give short lines (no model is built: the cost is stubbed)
    with monkeypatch.context() as patch:
        patch.setattr("fusion_nas.export._toolkit_cost", lambda arch, space: (10**12, 10**10))
        huge = parse_space(HUGE)
        arch = Architecture(
            huge.name,
            (
                StageChoice("attention", 12, 1, None, 12, "window"),
                StageChoice("gated", 120000, 1, 3, 12, "window"),
            ),
        )
        (tmp_path / "huge.py").write_text(export_code(arch, huge))
    rng = random.Random(1)
    for name in [*SMALL_SPACES, "padded-1d", "padded-2d"]:
        space = _space(name)
        archs = _uniform_archs(space) + [space.sample(rng) for _ in range(2)]
        for i, arch in enumerate(archs):
            meta = {"search": "a long search name " * 8, "note": "x" * 300, "trial": 3}
            source = export_code(arch, space, meta=meta)
            (tmp_path / f"{name.replace('-', '_')}_{i}.py").write_text(source)
    project = ["--config", str(REPO / "pyproject.toml")]
    for settings in (["--isolated"], project):  # ruff defaults (88 columns) and the project's
        for cmd in (["check"], ["format", "--check"]):
            done = subprocess.run(
                [*ruff, *cmd, *settings, "."], cwd=tmp_path, capture_output=True, text=True
            )
            assert done.returncode == 0, (cmd, settings, done.stdout, done.stderr)


# --------------------------------------------------------------------------- safety


def _payloads(marker: Path) -> list[str]:
    return [
        f"x=1)\nimport os;os.system('touch {marker}')#",
        f'"""\nimport os\nos.system("touch {marker}")\n"""',
        f"'''\n__import__('os').system('touch {marker}')\n'''",
        f'\\"""; open("{marker}", "w") #',
        'end with a quote and backslash \\\n"',
        f"\u2028import os\u2029os.system('touch {marker}')\x00\x1b[2J",
    ]


def _alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isascii() and ch.isalnum())


def _assert_inert(source: str, marker: Path) -> None:
    tree = ast.parse(source)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert {a.name for n in imports for a in n.names} <= {"torch", "torch.nn.functional", "nn"}
    doc = ast.get_docstring(tree, clean=False)
    assert doc is not None and '"' not in doc.split("Standalone:")[0] and "\\" not in doc
    code = source.split('"""', 2)[2]  # everything after the module docstring
    assert "os.system" not in code and "touch" not in code and "__import__" not in code
    model = _load(source)["FusionNet"]()  # executing the module and building the model
    assert isinstance(model, torch.nn.Module)
    assert not marker.exists()


def test_injection_through_meta_is_inert(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    space = load_space("digits")
    arch = space.sample(0)
    for payload in _payloads(marker):
        for key in ("search", "store_url", "note", "weights_file"):
            source = export_code(arch, space, meta={key: payload})
            _assert_inert(source, marker)
            if key != "weights_file":  # the text is kept (letters and digits), made inert
                doc = ast.get_docstring(ast.parse(source)) or ""
                assert _alnum(payload) in _alnum(doc)


def test_injection_through_space_name_and_description_is_inert(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    files = []
    for i, payload in enumerate(_payloads(marker)):
        text = PADDED_2D.replace('name = "padded-2d"', f"name = {json.dumps(payload)}")
        text = text.replace(
            'description = "9x7 images: windows of 4 need padding on both axes; 3x4 after pooling"',
            f"description = {json.dumps(payload + payload)}",
        )
        space = parse_space(text)
        assert space.name == payload
        arch = Architecture(
            space.name, (StageChoice("conv", 8, 1, 3), StageChoice("conv", 16, 1, 3))
        )
        out = tmp_path / f"model_{i}.py"
        write_export(arch, space, out)
        _assert_inert(out.read_text(), marker)
        files.append(str(out))
    # also run the written files in a fresh interpreter
    script = "import runpy, sys\nfor f in sys.argv[1:]:\n    runpy.run_path(f)\n"
    subprocess.run([sys.executable, "-I", "-c", script, *files], cwd=tmp_path, check=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    "meta",
    [
        {"search": object()},
        {"search": b"bytes"},
        {"trial": "1; import os"},
        {"trial": True},
        {"val_accuracy": "0.9"},
        {"val_accuracy": float("nan")},
        {"__import__('os')": 1},
    ],
)
def test_bad_meta_is_rejected_and_nothing_written(meta: dict[str, Any], tmp_path: Path) -> None:
    space = load_space("mnist1d")
    out = tmp_path / "model.py"
    with pytest.raises(ExportError):
        write_export(space.sample(0), space, out, meta=meta)
    assert list(tmp_path.iterdir()) == []


def test_architecture_outside_space_or_with_bad_values_is_rejected(tmp_path: Path) -> None:
    space = load_space("mnist1d")
    good = space.sample(0)
    bad = [
        Architecture(space.name, good.stages[:2]),  # wrong number of stages
        Architecture(space.name, (StageChoice("conv", 999, 1, 3), *good.stages[1:])),
        Architecture(space.name, (StageChoice("conv", 16.0, 1, 3), *good.stages[1:])),  # type: ignore[arg-type]
        Architecture(space.name, (StageChoice("conv", 16, True, 3), *good.stages[1:])),  # type: ignore[arg-type]
        Architecture(
            space.name, (StageChoice("attention", 16, 1, None, 2, "nope"), *good.stages[1:])
        ),
    ]
    for arch in bad:
        with pytest.raises(ExportError):
            write_export(arch, space, tmp_path / "model.py")
    assert list(tmp_path.iterdir()) == []


def test_unregistered_operator_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fancy(torch.nn.Module):
        uses = ("kernel",)

        def __init__(self, dim: int, channels: int, size: tuple[int, ...], **kw: Any) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    monkeypatch.setitem(op_registry._REGISTRY, "fancy", Fancy)
    text = PADDED_1D.replace(
        'operator = ["conv", "attention", "parallel", "gated"]', 'operator = ["fancy", "conv"]'
    )
    space = parse_space(text)
    arch = Architecture(space.name, (StageChoice("fancy", 8, 1, 3), StageChoice("conv", 16, 2, 3)))
    with pytest.raises(ExportError, match="cannot be exported"):
        export_code(arch, space)


# --------------------------------------------------------------------------- files


def test_write_export_needs_fitting_state_dict(tmp_path: Path) -> None:
    space = load_space("digits")
    arch = space.sample(0)
    with pytest.raises(ExportError, match="state_dict"):
        write_export(arch, space, tmp_path / "m.py", weights=tmp_path / "m.pt")
    other = build_model(space.sample(5), space).state_dict()
    with pytest.raises(ExportError, match="does not fit"):
        write_export(arch, space, tmp_path / "m.py", state_dict=other, weights=tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


RUNNER = """
import importlib.util, json, sys
# Hide the editable install of fusion_nas; the exported file must not need it.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
try:
    import fusion_nas  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("fusion_nas is importable")
import torch
out = {}
for name in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location(name, name + ".py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.FusionNet()
    model.load_state_dict(torch.load(name + ".pt", weights_only=True))
    model.eval()
    x = torch.load(name + ".input.pt", weights_only=True)
    with torch.no_grad():
        out[name] = model(x).tolist()
print(json.dumps(out))
"""


def test_exported_file_runs_without_fusion_nas(tmp_path: Path) -> None:
    cases = {
        "seq": (_space("padded-1d"), ("gated", "parallel")),
        "img": (_space("padded-2d"), ("attention", "gated")),
    }
    expected = {}
    for name, (space, ops) in cases.items():
        arch = _window_arch(space, ops)
        model = build_model(arch, space)
        model.eval()
        write_export(
            arch,
            space,
            tmp_path / f"{name}.py",
            state_dict=model.state_dict(),
            weights=tmp_path / f"{name}.pt",
            meta={"search": "standalone"},
        )
        x = torch.randn(space.input_shape(2))
        torch.save(x, tmp_path / f"{name}.input.pt")
        with torch.no_grad():
            expected[name] = model(x)
        assert f'torch.load("{name}.pt"' in (tmp_path / f"{name}.py").read_text()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(RUNNER), *cases],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name, want in expected.items():
        assert torch.allclose(torch.tensor(got[name]), want, atol=1e-6)


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    for name, ops in (("padded-1d", ("gated", "attention")), ("padded-2d", ("parallel", "gated"))):
        space = _space(name)
        arch = _window_arch(space, ops)
        model = build_model(arch, space)
        model.eval()
        path = tmp_path / f"{name}.onnx"
        write_export(arch, space, tmp_path / f"{name}.py", state_dict=model.state_dict(), onnx=path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.randn(space.input_shape(3))
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            want = model(x)
        assert torch.allclose(got, want, atol=1e-4)


def test_onnx_missing_gives_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    space = load_space("digits")
    arch = space.sample(0)
    state = build_model(arch, space).state_dict()
    with pytest.raises(ExportError, match=r"pip install -e '\.\[onnx\]'"):
        write_export(arch, space, tmp_path / "m.py", state_dict=state, onnx=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
