"""A new operator is written in one place (``nets.py``) and nothing else is edited.

The package is copied to a temporary folder, a toy operator is appended to the copy's
``nets.py`` and nothing else changes; a fresh interpreter then shows the operator in a space
file, a model, the cost model, an exported module, a real search and the dashboard's data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TOY_OPERATOR = '''


@register_op("toy", uses=("kernel",))
class ToyBlock(nn.Module):
    """``x + depthwise_conv_k(x)``: a toy operator, defined here and nowhere else."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        k, C = cfg.kernel, cfg.width
        self.conv = conv_nd(len(size))(C, C, k, padding=k // 2, groups=C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return x + self.conv(x)
'''

SPACE = """
name = "toy-space"
[input]
kind = "sequence"
length = 16
channels = 1
classes = 3
[stem]
width = 8
kernel = 3
[[stage]]
operator = ["toy", "conv"]
kernel = [3, 5]
width = 8
"""

SCRIPT = """
import json, sys
import torch
from starlette.testclient import TestClient

import fusion_nas
from fusion_nas import ProxyConfig, SearchConfig, Store, build_model, count_cost, parse_space
from fusion_nas.model.cost import arch_cost
from fusion_nas.deploy.export import export_code
from fusion_nas.web.app import create_app

assert fusion_nas.__file__.startswith(sys.argv[1]), fusion_nas.__file__
out = {}
space = parse_space(sys.argv[2], source="toy.toml")
toys = [a for a in space.enumerate() if a.stages[0].operator == "toy"]
out["space_ops"] = list(space.stages[0].operator)
out["toy_archs"] = len(toys)
arch = next(a for a in toys if a.stages[0].kernel == 5)
torch.manual_seed(0)
model = build_model(arch, space).eval()
x = torch.randn(2, 1, 16)
out["model_has_toy"] = any(type(m).__name__ == "ToyBlock" for m in model.modules())
out["macs"] = count_cost(model, torch.zeros(1, 1, 16)).macs
out["meta_macs"] = arch_cost(arch, space).macs
ns = {}
exec(compile(export_code(arch, space), "<exported>", "exec"), ns)
exported = ns["FusionNet"]().eval()
exported.load_state_dict(model.state_dict())
out["export_has_toy"] = "ToyBlock" in ns
out["export_equal"] = bool(torch.equal(exported(x), model(x)))
store = Store(sys.argv[3])
config = SearchConfig(
    name="toy-search", space=space, dataset="synthetic", strategy="optuna:grid", trials=4,
    proxy=ProxyConfig(epochs=1),
)
df = fusion_nas.run_search(config, store)
out["statuses"] = sorted(set(df.status))
client = TestClient(create_app(store))
page = client.get("/api/search", params={"name": "toy-search"}).json()
out["dashboard_ops"] = json.dumps(page["figures"]["operators"])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_toy_operator_in_one_place_reaches_every_part(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(REPO / "fusion_nas", pkg / "fusion_nas", symlinks=False)
    nets = pkg / "fusion_nas" / "model" / "nets.py"
    nets.write_text(nets.read_text(encoding="utf-8") + TOY_OPERATOR, encoding="utf-8")
    changed = [
        p.relative_to(pkg).as_posix()
        for p in (pkg / "fusion_nas").rglob("*.py")
        if p.read_bytes() != (REPO / p.relative_to(pkg)).read_bytes()
    ]
    assert changed == ["fusion_nas/model/nets.py"]  # the one edit

    script = f"import sys; sys.path.insert(0, {str(pkg)!r})\n" + textwrap.dedent(SCRIPT)
    store = f"sqlite:///{tmp_path / 'toy.db'}"
    done = subprocess.run(
        [sys.executable, "-c", script, str(pkg), SPACE, store],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["space_ops"] == ["toy", "conv"]
    assert out["toy_archs"] == 2  # kernels 3 and 5
    assert out["model_has_toy"]
    # stem conv 16*8*3 + depthwise k5 16*8*5 + head 8*3
    assert out["macs"] == 16 * 8 * 3 + 16 * 8 * 5 + 8 * 3
    assert out["meta_macs"] == out["macs"]
    assert out["export_has_toy"] and out["export_equal"]
    assert out["statuses"] == ["complete"]
    assert '"toy"' in out["dashboard_ops"]
