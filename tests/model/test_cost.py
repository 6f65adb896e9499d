"""Cost model: exact MACs/params against analytic formulas written here from first principles."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas import build_model, count_cost, load_space, parse_space
from fusion_nas.errors import ArchitectureError
from fusion_nas.model import space as space_mod
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.cost import Cost, arch_cost
from tests.helpers.op_configs import WINDOW, Cfg, op_configs
from tests.helpers.op_configs import cfg as make_cfg

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- analytic formulas


def conv_macs(C: int, size: tuple[int, ...], k: int) -> int:
    """Same-padding C -> C convolution: every output element takes C * k^d multiplies."""
    return math.prod(size) * C * C * k ** len(size)


def se_hidden(C: int) -> int:
    return max(1, C // 4)  # channel attention: reduction 4, at least one hidden unit


def attention_macs(C: int, size: tuple[int, ...], h: int, variant: str, window: int) -> int:
    """QKV and output projections plus the token mixing of one attention variant; channel
    attention: the two linears on the pooled (C,) vector (pooling and rescaling: no MACs)."""
    if variant == "channel":
        return 2 * C * se_hidden(C)
    N, hd = math.prod(size), C // h
    macs = N * C * 3 * C + N * C * C  # qkv, proj
    if variant == "global":
        macs += 2 * h * N * N * hd  # QK^T and AV
    elif variant == "window":
        extent = [min(window, s) for s in size]
        padded = [-(-s // e) * e for s, e in zip(size, extent)]
        n_windows = math.prod(p // e for p, e in zip(padded, extent))
        T = math.prod(extent)
        macs += 2 * h * n_windows * T * T * hd  # QK^T and AV inside each (padded) window
    elif variant == "linear":
        macs += 2 * N * hd * hd * h  # K^T V, then Q (K^T V)
        macs += N * hd * h  # the normaliser Q (sum_n K)
    else:
        raise AssertionError(variant)
    return macs


def mlp_hidden(C: int, ratio: float) -> int:
    return max(1, round(C * ratio)) if ratio else 0  # ratio 0: no MLP


def mlp_macs(C: int, size: tuple[int, ...], ratio: float) -> int:
    return 2 * math.prod(size) * C * mlp_hidden(C, ratio)


def op_macs(op: str, C, size, k=None, h=None, variant=None, window=WINDOW, ratio=2.0) -> int:
    """MACs of one operator block for a batch of one (fields the operator ignores: None)."""
    if op == "conv":
        return conv_macs(C, size, k)
    macs = attention_macs(C, size, h, variant, window) + mlp_macs(C, size, ratio)
    if op == "attention":
        return macs
    macs += conv_macs(C, size, k)
    if op == "parallel":
        return macs
    assert op == "gated"
    return macs + C * C  # gate Linear(C, C) on the pooled (B, C) vector


def op_params(op: str, C, size, k=None, ratio=2.0, variant="global") -> int:
    """Parameters of one operator block (weights, biases, norms, fusion weights, position)."""
    conv = C * C * k ** len(size) + 2 * C if k else None  # bias-free conv + BatchNorm
    hidden = mlp_hidden(C, ratio)
    mlp = 2 * C + C * hidden + hidden + hidden * C + C if hidden else 0  # LN, fc1, fc2
    attn = C * math.prod(size) + 2 * C + 3 * C * C + 3 * C + C * C + C  # pos, LN, qkv, proj
    if variant == "channel":
        r = se_hidden(C)
        attn = C * r + r + r * C + C  # fc1, fc2
    if op == "conv":
        return conv
    if op == "attention":
        return attn + mlp
    if op == "parallel":
        return conv + attn + 2 * C + mlp
    assert op == "gated"
    return conv + attn + (C * C + C) + C + mlp  # gate Linear, scale


# --------------------------------------------------------------------------- operator configs


def _configs() -> list[Cfg]:
    # The formulas here cover the fusion operators; the MobileViT and EfficientFormer blocks
    # are counted by hand in tests/model/test_mobilevit.py and test_efficientformer.py.
    out = [c for c in op_configs() if c.op in ("conv", "attention", "parallel", "gated")]
    # Windows that divide evenly, a window larger than the map, and a 2-D window shorter on
    # one axis only.
    for size in ((12,), (2,), (8, 12), (4, 2), (9, 9)):
        out.append(make_cfg("attention", size, 8, heads=2, attention="window"))
    return out


CONFIGS = _configs()


def test_window_formula_by_hand() -> None:
    # 10 tokens, window 4: padded to 12, 3 windows of 4 tokens; 1 head of width 8.
    assert attention_macs(8, (10,), 1, "window", 4) - 10 * 8 * 32 == 2 * 3 * 16 * 8
    # 7x5, window 4: padded to 8x8 -> 4 windows of 16 tokens.
    assert attention_macs(8, (7, 5), 2, "window", 4) - 35 * 8 * 32 == 2 * 2 * 4 * 256 * 4
    # 3x6, window 4: extent (3, 4), padded to 3x8 -> 2 windows of 12 tokens.
    assert attention_macs(4, (3, 6), 1, "window", 4) - 18 * 4 * 16 == 2 * 2 * 144 * 4


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.id for c in CONFIGS])
def test_operator_cost_matches_analytic_formula(cfg: Cfg) -> None:
    op = cfg.build()
    batch = 2
    cost = count_cost(op, cfg.input(batch))
    b = cfg.block
    per_sample = op_macs(
        b.operator, b.width, cfg.size, b.kernel, b.heads, b.attention, b.window, b.mlp_ratio
    )
    assert b.window == WINDOW
    assert cost.macs == batch * per_sample
    assert cost.flops == cost.macs
    assert cost.params == sum(p.numel() for p in op.parameters())
    assert cost.params == op_params(
        b.operator, b.width, cfg.size, b.kernel, b.mlp_ratio, b.attention
    )


# --------------------------------------------------------------------------- whole models


def model_cost(space, arch) -> tuple[int, int]:
    """(MACs for a batch of one, params) of FusionNet from the space's raw fields."""
    dim, k, stride = len(space.size), space.stem.kernel, space.stem.stride
    size = tuple((s + 2 * (k // 2) - k) // stride + 1 for s in space.size)
    width = space.stem.width
    macs = math.prod(size) * space.channels * width * k**dim
    params = space.channels * width * k**dim + width + 2 * width  # conv (with bias) + BN
    for choice, spec in zip(arch.stages, space.stages):
        if choice.depth == 0:
            continue  # skipped: nothing built, size and width carry over
        down = choice.downsample or spec.downsample[0]
        ratio = spec.mlp_ratio[0] if choice.mlp_ratio is None else choice.mlp_ratio
        if down == "conv":  # k3 stride-2 conv (padding 1) to the new width + BN
            size = tuple((s + 1) // 2 for s in size)
            macs += math.prod(size) * width * choice.width * 3**dim
            params += width * choice.width * 3**dim + 2 * choice.width
        else:
            if down == "pool":
                size = tuple(s // 2 for s in size)  # AvgPool(2): no MACs
            if choice.width != width:  # 1x1 transition conv + BN
                macs += math.prod(size) * width * choice.width
                params += width * choice.width + 2 * choice.width
        width = choice.width
        for _ in range(choice.depth):
            macs += op_macs(
                choice.operator,
                width,
                size,
                choice.kernel,
                choice.heads,
                choice.attention,
                spec.window,
                ratio,
            )
            params += op_params(
                choice.operator, width, size, choice.kernel, ratio, choice.attention
            )
    macs += width * space.classes  # head
    params += 2 * width + width * space.classes + space.classes  # LayerNorm + Linear
    return macs, params


MODEL_CASES = [(name, seed) for name in ("mnist1d", "digits", "fashion-mnist") for seed in range(8)]
MODEL_CASES += [("coatnet-like", seed) for seed in range(2)]
MODEL_CASES += [("cifar10", seed) for seed in range(4)]


@pytest.mark.parametrize(("space_name", "seed"), MODEL_CASES)
def test_model_cost_matches_analytic_formula(space_name: str, seed: int) -> None:
    space = load_space(space_name)
    arch = space.sample(seed)
    model = build_model(arch, space)
    cost = count_cost(model, torch.randn(space.input_shape(1)))
    assert (cost.macs, cost.params) == model_cost(space, arch), arch.describe()
    assert cost.params == sum(p.numel() for p in model.parameters())
    # The same count without a model: built and run on the meta device.
    assert arch_cost(arch, space) == cost


# --------------------------------------------------------------------------- without allocation


def test_arch_cost_takes_the_space_the_architecture_names() -> None:
    space = load_space("mnist1d")
    arch = space.sample(11)
    assert arch_cost(arch) == arch_cost(arch, space)
    with pytest.raises(ArchitectureError, match="stages"):
        arch_cost(arch, load_space("digits"))


HUGE = """
name = "huge"
[input]
kind = "sequence"
length = 16
channels = 1
classes = 10
[stem]
width = 8
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
heads = 4
attention = ["global", "window", "linear"]
width = 100000000
"""


def test_huge_width_is_costed_exactly_on_the_meta_device(monkeypatch) -> None:
    monkeypatch.setattr(space_mod, "MAX_SIZE", 10**9)  # past the caps that files get
    monkeypatch.setattr(space_mod, "MAX_VALUES", 10**30)
    space = parse_space(HUGE, source="huge.toml")
    archs = space.enumerate()
    assert len(archs) == 1 + 3 + 3 + 3
    for arch in archs:
        cost = arch_cost(arch, space)
        # Exact: ~10^16 parameters, which no machine could allocate.
        assert (cost.macs, cost.params) == model_cost(space, arch), arch.describe()
        assert cost.params > 10**16


_MEASURE = """
import json, sys
import torch
from fusion_nas import parse_space
from fusion_nas.model import space as space_mod
from fusion_nas.model.cost import arch_cost

def peak_mb():
    # VmHWM: peak resident size of this process image (ru_maxrss would include the parent's).
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

space_mod.MAX_SIZE = 10**9
space_mod.MAX_VALUES = 10**30
space = parse_space(sys.argv[1], source="huge.toml")
archs = space.enumerate()
arch_cost(space.sample(0), space)  # first call: lazy imports and kernels
before = peak_mb()
costs = [arch_cost(a, space).params for a in archs]
after = peak_mb()
control = torch.ones(25_000_000)  # 100 MB, really allocated: the measure must see it
print(json.dumps({"grew_mb": after - before, "control_mb": peak_mb() - after, "n": len(costs)}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_huge_width_allocates_nothing() -> None:
    # A fresh process, so the peak resident size is not that of earlier tests.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MEASURE), HUGE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["n"] == 10
    assert out["control_mb"] > 80, out  # the measure sees a 100 MB tensor
    # One real weight of this network would take 400 MB (10^8 floats); the model ~10^16 floats.
    assert out["grew_mb"] < 20, out


def test_model_cost_scales_with_batch() -> None:
    space = load_space("digits")
    model = build_model(space.sample(3), space)
    one = count_cost(model, torch.randn(space.input_shape(1)))
    five = count_cost(model, torch.randn(space.input_shape(5)))
    assert five.macs == 5 * one.macs and five.params == one.params


def test_cost_ignores_train_eval_and_grad_mode_and_restores_flags() -> None:
    space = load_space("digits")
    model = build_model(space.sample(7), space)
    x = torch.randn(space.input_shape(2))
    model.train()
    model.stages[0].eval()  # a mix of flags, to see each one restored
    flags = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}

    with torch.enable_grad():
        a = count_cost(model, x)
        assert torch.is_grad_enabled()
    assert {name: m.training for name, m in model.named_modules()} == flags
    with torch.no_grad():
        b = count_cost(model, x)
        assert not torch.is_grad_enabled()
    model.eval()
    c = count_cost(model, x)
    assert all(not m.training for m in model.modules())
    assert a == b == c
    # Counting must not touch BatchNorm running statistics or any weight.
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


# --------------------------------------------------------------------------- functional attention


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_counted_exactly(batch_first: bool) -> None:
    B, L, E, h = 3, 7, 16, 4
    mha = nn.MultiheadAttention(E, h, batch_first=batch_first)

    class Self(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.mha(t, t, t)[0]

    x = torch.randn(B, L, E) if batch_first else torch.randn(L, B, E)
    expected = B * (3 * L * E * E + 2 * L * L * E + L * E * E)
    for mode in ("train", "eval"):
        getattr(mha, mode)()
        cost = count_cost(Self(), x)
        assert cost.macs == expected
        assert cost.params == 4 * E * E + 4 * E  # in_proj (3E x E + 3E), out_proj (E x E + E)


def test_cross_attention_with_kdim_vdim_counted_exactly() -> None:
    B, L, S, E, kd, vd = 2, 5, 9, 12, 6, 10
    mha = nn.MultiheadAttention(E, 3, kdim=kd, vdim=vd, batch_first=True)

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, q, k, v):
            return self.mha(q, k, v, need_weights=False)[0]

    args = (torch.randn(B, L, E), torch.randn(B, S, kd), torch.randn(B, S, vd))
    expected = B * (L * E * E + S * kd * E + S * vd * E + 2 * L * S * E + L * E * E)
    assert count_cost(Cross(), args).macs == expected


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def test_scaled_dot_product_attention_counted_exactly() -> None:
    B, h, L, S, E, Ev = 2, 3, 5, 7, 4, 6
    q, k, v = torch.randn(B, h, L, E), torch.randn(B, h, S, E), torch.randn(B, h, S, Ev)
    cost = count_cost(_Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v)), (q, k, v))
    assert cost.macs == B * h * (L * S * E + L * S * Ev)


MATMULS = {
    "torch.matmul": lambda a, b: torch.matmul(a, b),
    "operator @": lambda a, b: a @ b,
    "Tensor.matmul": lambda a, b: a.matmul(b),
    "torch.bmm": lambda a, b: torch.bmm(a, b),
    "Tensor.bmm": lambda a, b: a.bmm(b),
    "einsum": lambda a, b: torch.einsum("bij,bjk->bik", a, b),
    "einsum list": lambda a, b: torch.einsum("bij,bjk->bik", [a, b]),
}


@pytest.mark.parametrize("name", list(MATMULS))
def test_matmul_family_counted_exactly(name: str) -> None:
    B, n, m, p = 3, 4, 5, 6
    a, b = torch.randn(B, n, m), torch.randn(B, m, p)
    assert count_cost(_Fn(MATMULS[name]), (a, b)).macs == B * n * m * p


def test_broadcast_matmul_and_linear_counted_exactly() -> None:
    a, b = torch.randn(2, 3, 4, 5), torch.randn(5, 7)  # broadcast over (2, 3)
    assert count_cost(_Fn(lambda a, b: a @ b), (a, b)).macs == 2 * 3 * 4 * 5 * 7
    lin = nn.Linear(5, 7)
    assert count_cost(lin, a).macs == 2 * 3 * 4 * 5 * 7
    assert count_cost(lin, a).params == 5 * 7 + 7


def test_mixed_custom_module_sums_everything() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            x = self.conv(x)  # (1, 8, 4, 4)
            t = x.flatten(2).transpose(1, 2)  # (1, 16, 8)
            t = self.mha(t, t, t)[0]
            return t @ t.transpose(1, 2)  # (1, 16, 16)

    expected = 16 * 8 * 3 * 9 + (4 * 16 * 64 + 2 * 16 * 16 * 8) + 16 * 16 * 8
    assert count_cost(Mixed(), torch.randn(1, 3, 8, 8)).macs == expected


def test_thop_reports_zero_for_multihead_attention() -> None:
    thop = pytest.importorskip("thop")

    class Self(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, t):
            return self.mha(t, t, t)[0]

    x = torch.randn(1, 10, 16)
    thop_macs, thop_params = thop.profile(Self().eval(), inputs=(x,), verbose=False)
    assert thop_macs == 0  # DESIGN §4: thop does not see the attention at all
    ours = count_cost(Self(), x)
    assert ours.macs == 4 * 10 * 16 * 16 + 2 * 10 * 10 * 16 > 0
    assert thop_params == 0  # and no parameters either
    assert ours.params == 4 * 16 * 16 + 4 * 16


# --------------------------------------------------------------------------- reference networks


class _ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        t = self.norm1(x)
        x = x + self.attn(t, t, t, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _ViT(nn.Module):
    """ViT-B/16 from plain torch.nn (the timm/torchvision layout)."""

    def __init__(self, dim=768, depth=12, heads=12, hidden=3072, classes=1000, img=224, patch=16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[_ViTBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, 196, 768)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


class _ResNet50(nn.Module):
    """torchvision's resnet50 layout (stride on the 3x3 conv, 'v1.5')."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers, cin = [], 64
        for width, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(n):
                layers.append(_Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _close(value: float, reference: float, rel: float = 0.005) -> bool:
    return abs(value - reference) <= rel * reference


def test_vit_b16_reference_cost() -> None:
    with torch.no_grad():
        cost = count_cost(_ViT().eval(), torch.randn(1, 3, 224, 224))
    assert _close(cost.macs, 17.564e9), cost.macs  # 17.56 GMACs
    assert _close(cost.params, 86.568e6), cost.params  # 86.57 M params
    # Exact, from the formula: patch embedding, 12 x (attention + MLP), head.
    N, D = 197, 768
    block = 4 * N * D * D + 2 * N * N * D + 2 * N * D * 3072
    assert cost.macs == 196 * D * 3 * 16 * 16 + 12 * block + D * 1000


def test_resnet50_reference_cost() -> None:
    with torch.no_grad():
        cost = count_cost(_ResNet50().eval(), torch.randn(1, 3, 224, 224))
    assert _close(cost.macs, 4.089e9), cost.macs  # 4.09 GMACs
    assert _close(cost.params, 25.557e6), cost.params  # 25.56 M params
    assert cost.params == 25_557_032  # torchvision's resnet50


# --------------------------------------------------------------------------- space cost range


def test_space_cost_range_script_finds_the_enumerated_extremes(tmp_path: Path) -> None:
    out = tmp_path / "range.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/space_cost_range.py", "--space", "digits", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    space = load_space("digits")
    macs = [arch_cost(a, space).macs for a in space.enumerate()]
    assert (result["min"]["macs"], result["max"]["macs"]) == (min(macs), max(macs))
    assert result["architectures"] == len(macs) == 416


def test_mnist1d_spans_the_published_baselines() -> None:
    # The space reaches below the GRU (14,880 MACs) and CNN (31,750) and far above them; the
    # extremes are those benchmarks/space_cost_range.py found, costed again here.
    space = load_space("mnist1d")
    result = json.loads((REPO / "benchmarks/results/space_cost_range_mnist1d.json").read_text())
    assert result["architectures"] == space.num_architectures()
    for name in ("min", "max"):
        arch = space.validate(Architecture.from_dict(result[name]["json"]))
        cost = arch_cost(arch, space)
        assert (cost.macs, cost.params) == (result[name]["macs"], result[name]["params"])
    assert result["min"]["macs"] == 912 and result["min"]["macs"] <= 3_000
    assert result["max"]["macs"] == 4_437_152 and result["max"]["macs"] >= 2_000_000


LEAN = """
name = "lean"
[input]
kind = "sequence"
length = 16
channels = 1
classes = 3
[stem]
width = 4
kernel = 3
[[stage]]
operator = "gated"
kernel = 3
attention = "channel"
mlp_ratio = 0
width = 8
downsample = "conv"
[[stage]]
operator = "conv"
width = 16
depth = [0, 1]
downsample = "pool"
"""


def test_strided_conv_channel_attention_lean_block_and_skip_by_hand() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    space = parse_space(LEAN)
    arch = Architecture(
        "lean", (StageChoice("gated", 8, 1, 3, None, "channel"), StageChoice("skip", 0, 0))
    )
    macs = {
        "stem conv 1->4, k3, length 16": 16 * 4 * 3,
        "stride-2 conv 4->8, k3, to length 8": 8 * 8 * 4 * 3,
        "gated conv 8->8, k3": 8 * 8 * 8 * 3,
        "channel attention 8->2->8": 8 * 2 + 2 * 8,
        "gate 8->8": 8 * 8,
        "no MLP, skipped stage": 0,
        "head 8->3": 8 * 3,
    }
    params = {
        "stem conv + bias, BN": 4 * 3 + 4 + 2 * 4,
        "stride-2 conv, BN": 8 * 4 * 3 + 2 * 8,
        "gated conv, BN": 8 * 8 * 3 + 2 * 8,
        "channel attention fc1, fc2": (8 * 2 + 2) + (2 * 8 + 8),
        "gate, scale": (8 * 8 + 8) + 8,
        "final LN, head": 2 * 8 + (8 * 3 + 3),
    }
    assert (sum(macs.values()), sum(params.values())) == (2_616, 509)
    assert arch_cost(arch, space) == Cost(2_616, 509)
    # torch's own counter (2 FLOPs per MAC) agrees: no attention kernel here that it misses
    model = build_model(arch, space).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 1, 16))
    assert counter.get_total_flops() == 2 * 2_616
