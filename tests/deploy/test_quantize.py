"""int8 dynamic quantisation: accuracy kept, the exported code runs the int8 weights."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.deploy.quantize import (
    LOADER,
    check_mode,
    load_quantized,
    quantize_dynamic,
    quantized_linears,
    write_quantized_export,
)
from fusion_nas.errors import ExportError
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.space import load_space
from fusion_nas.training.data import load_dataset
from fusion_nas.training.loop import ProxyConfig, evaluate_accuracy, train_proxy

runner = CliRunner()
MAX_DROP = 0.02  # stated: int8 loses at most 2 points of accuracy on a small trained model
ARCH = Architecture(
    "digits",
    (
        StageChoice("attention", 8, 1, heads=1, attention="linear"),
        StageChoice("gated", 16, 1, kernel=3, heads=1, attention="linear"),
    ),
)


@pytest.fixture(scope="module")
def trained():
    space = load_space("digits")
    splits = load_dataset(
        "digits", kind=space.kind, channels=space.channels, size=space.size,
        classes=space.classes, seed=0, train_subset=512,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(ARCH, space)
    config = ProxyConfig(epochs=6, lr=0.02, batch_size=64)
    train_proxy(model, splits.train, None, config, seed=0)  # no per-epoch evaluation
    return space, splits, model


def test_int8_model_runs_and_stays_within_the_stated_accuracy_drop(trained) -> None:
    space, splits, model = trained
    int8 = quantize_dynamic(model)
    # attention qkv/proj, the MLPs, the gate and the head: 2 + 2 + 2 + 1 + 2 + 1
    assert quantized_linears(int8) == 10
    assert quantized_linears(model) == 0  # the float model is left alone
    before = evaluate_accuracy(model, splits.val)
    after = evaluate_accuracy(int8, splits.val)
    assert before > 0.6  # a trained model, not chance
    assert before - after <= MAX_DROP
    with torch.no_grad():
        x = splits.val.tensors[0][:64]
        assert not torch.equal(model(x), int8(x))  # it really is another (int8) model


def test_quantized_export_loads_in_the_standalone_file(trained, tmp_path) -> None:
    space, _, model = trained
    out, weights = tmp_path / "net.py", tmp_path / "net-int8.pt"
    report = write_quantized_export(
        ARCH, space, out, state_dict=model.state_dict(), weights=weights
    )
    assert 0 < report["max_abs_logit_change"] < 1
    source = out.read_text()
    assert "quantize_dynamic(FusionNet()," in source and "net-int8.pt" in source
    assert LOADER.split(":")[0] in source
    script = (
        "import sys, torch\nsys.path.insert(0, '.')\nfrom net import FusionNet\n"
        "from torch.ao.quantization import quantize_dynamic\n"
        "m = quantize_dynamic(FusionNet(), {torch.nn.Linear}, dtype=torch.qint8)\n"
        "m.load_state_dict(torch.load('net-int8.pt', weights_only=True))\n"
        "torch.manual_seed(0)\nx = torch.randn(3, 1, 8, 8)\n"
        "torch.save(m.eval()(x), 'logits.pt')\n"
    )
    run = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()
    torch.manual_seed(0)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        expected = quantize_dynamic(model)(x)
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)
    reloaded = load_quantized(build_model(ARCH, space), torch.load(weights, weights_only=True))
    with torch.no_grad():
        assert torch.equal(reloaded(x), expected)


def test_a_state_dict_of_another_architecture_is_one_line() -> None:
    space = load_space("digits")
    other = Architecture(
        "digits", (StageChoice("conv", 8, 1, kernel=3), StageChoice("conv", 16, 1, kernel=3))
    )
    sd = quantize_dynamic(build_model(other, space)).state_dict()
    with pytest.raises(ExportError, match="int8 state_dict does not fit the architecture"):
        load_quantized(build_model(ARCH, space), sd)


def test_unknown_mode_names_the_allowed_one() -> None:
    with pytest.raises(ExportError, match="unknown quantisation 'static'; allowed: 'dynamic'"):
        check_mode("static")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--quantize", "static", "--weights", "w.pt"], "allowed: 'dynamic'"),
        (["--quantize", "dynamic"], "--quantize needs --weights FILE"),
        (["--quantize", "dynamic", "--weights", "w.pt", "--onnx", "m.onnx"], "drop --onnx"),
    ],
)
def test_cli_quantize_bad_input_is_one_line(extra: list[str], message: str, tmp_path) -> None:
    res = runner.invoke(
        app, ["export", "x", "--trial", "0", "--out", str(tmp_path / "m.py"), *extra]
    )
    assert res.exit_code == 2 and message in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_export_quantize_dynamic_writes_int8_weights(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    res = runner.invoke(
        app,
        ["search", "digits", "--dataset", "synthetic", "--trials", "2", "--epochs", "1",
         "--strategy", "optuna:random", "--name", "q", "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out, weights = tmp_path / "m.py", tmp_path / "m-int8.pt"
    res = runner.invoke(
        app,
        ["export", "q", "--pick", "best", "--out", str(out), "--weights", str(weights),
         "--quantize", "dynamic", "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "(int8, max logit change" in res.output
    state = torch.load(weights, weights_only=True)
    assert any(k.endswith("_packed_params._packed_params") for k in state)
    assert "quantize_dynamic(FusionNet()," in out.read_text()
