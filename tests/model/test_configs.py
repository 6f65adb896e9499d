"""The torch-free view of nets.py's configs agrees with nets.py itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fusion_nas.model import configs, nets


def light():
    """The view made from nets.py's source (as a process without torch sees it)."""
    return configs._build_light()


def test_view_lists_the_same_operators_and_variants() -> None:
    view = light()
    assert {k: c.uses for k, c in view.OPS.items()} == {k: c.uses for k, c in nets.OPS.items()}
    assert list(view.ATTENTIONS) == list(nets.ATTENTIONS)
    assert [c.uses for c in view.ATTENTIONS.values()] == [c.uses for c in nets.ATTENTIONS.values()]
    for name in ("SEARCHABLE", "DOWNSAMPLES", "FUSION_INIT"):
        assert getattr(view, name) == getattr(nets, name)
    for op in nets.OPS:
        for variant in (None, *nets.ATTENTIONS):
            assert view.reads(op, variant) == nets.reads(op, variant)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"operator": "conv", "width": 8},
        {"operator": "conv", "width": 8, "kernel": 2},
        {"operator": "attention", "width": 6, "heads": 4},
        {"operator": "gated", "width": 8, "attention": "nope"},
        {"operator": "nope", "width": 8},
        {"operator": "parallel", "width": 8, "mlp_ratio": -1},
    ],
)
def test_view_checks_block_configs_as_nets_does(kwargs) -> None:
    view = light()

    def outcome(module):
        try:
            return module.BlockCfg(**kwargs).__dict__
        except module.CfgError as exc:
            return str(exc)

    assert outcome(view) == outcome(nets)


def test_view_is_nets_once_imported() -> None:
    assert configs.nets_view() is nets
    assert nets.CfgError in configs.cfg_errors()


def test_a_space_parsed_without_torch_builds_with_nets() -> None:
    code = (
        "import sys\n"
        "from fusion_nas.model.space import load_space\n"
        "space = load_space('digits')\n"
        "arch = space.sample(__import__('random').Random(0))\n"
        "assert 'torch' not in sys.modules\n"
        "from fusion_nas.model.build import build_model\n"
        "model = build_model(arch, space)\n"
        "print(type(space.net_cfg(arch)).__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.strip() == "fusion_nas.model.nets"
