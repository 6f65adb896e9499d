"""``fusion-nas export`` / ``retrain`` and trial picking, end to end through the CLI."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.errors import FusionNasError, StoreError
from fusion_nas.store.queries import pick_trial
from fusion_nas.store.records import read_retrains
from fusion_nas.store.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('store')}/s.db"
    res = runner.invoke(
        app,
        ["search", "digits", "--dataset", "synthetic", "--trials", "4", "--epochs", "2",
         "--strategy", "optuna:random", "--name", "ex", "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return url


def test_export_with_weights_runs_without_fusion_nas(searched: str, tmp_path) -> None:
    out, weights = tmp_path / "model.py", tmp_path / "model.pt"
    res = runner.invoke(
        app, ["export", "ex", "--pick", "best", "--out", str(out), "--weights", str(weights),
              "--store", searched],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    source = out.read_text()
    ast.parse(source)
    assert "Search: ex" in source and "model.pt" in source
    script = (
        "import sys, torch\n"
        "# hide the editable install: the exported file must not need fusion_nas\n"
        "sys.meta_path[:] = [f for f in sys.meta_path"
        " if '__editable__' not in getattr(f, '__module__', '')]\n"
        "try:\n    import fusion_nas\nexcept ImportError:\n    pass\n"
        "else:\n    sys.exit('fusion_nas must not be importable here')\n"
        "sys.path.insert(0, '.')  # -I leaves the working directory out\n"
        "from model import FusionNet\n"
        "m = FusionNet()\n"
        "m.load_state_dict(torch.load('model.pt', weights_only=True))\n"
        "print(m.eval()(torch.zeros(2, 1, 8, 8)).shape)\n"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "torch.Size([2, 10])" in run.stdout


def load_exported(path) -> object:
    """The module an export wrote, imported from its file."""
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_onnx_from_the_cli_matches_the_pytorch_model(searched: str, tmp_path) -> None:
    import onnx
    import onnxruntime

    out, weights, graph = tmp_path / "model.py", tmp_path / "model.pt", tmp_path / "model.onnx"
    res = runner.invoke(
        app, ["export", "ex", "--pick", "best", "--out", str(out), "--weights", str(weights),
              "--onnx", str(graph), "--store", searched],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"ONNX {graph}" in res.output
    onnx.checker.check_model(onnx.load(str(graph)))
    model = load_exported(out).FusionNet().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch axis is free
        x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
        (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-5, atol=1e-5)
    # the graph holds the trained weights, not a fresh network's
    fresh = load_exported(out).FusionNet().eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), expected, atol=1e-3)


def test_export_onnx_refuses_a_graph_that_drifts_from_pytorch(
    searched: str, tmp_path, monkeypatch
) -> None:
    import onnxruntime

    real = onnxruntime.InferenceSession

    class Drifting:
        """onnxruntime answering 1e-3 off: small, but ten times the check's tolerance."""

        def __init__(self, *args, **kwargs) -> None:
            self.session = real(*args, **kwargs)

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, *args, **kwargs):
            return [out + 1e-3 for out in self.session.run(*args, **kwargs)]

    monkeypatch.setattr(onnxruntime, "InferenceSession", Drifting)
    out, weights, graph = tmp_path / "model.py", tmp_path / "model.pt", tmp_path / "model.onnx"
    res = runner.invoke(
        app, ["export", "ex", "--trial", "0", "--out", str(out), "--weights", str(weights),
              "--onnx", str(graph), "--store", searched],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    found = re.search(
        r"ONNX model does not match PyTorch \(max difference ([0-9.e-]+)\)", res.stderr
    )
    assert found and float(found[1]) == pytest.approx(1e-3, rel=0.05), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no code, weights or graph left behind


def test_export_errors_are_one_line_and_write_nothing(searched: str, tmp_path) -> None:
    out = tmp_path / "m.py"
    cases = [
        (["export", "ex", "--trial", "99", "--out", str(out)], "trial 99 does not exist"),
        (["export", "nope", "--pick", "best", "--out", str(out)], "no search named 'nope'"),
        (["export", "ex", "--pick", "fast", "--out", str(out)], "unknown pick 'fast'; allowed"),
        (["export", "ex", "--out", str(out)], "give exactly one of --trial N or --pick"),
        (["export", "ex", "--trial", "0", "--out", str(tmp_path / "m.txt")], "must name a .py"),
        (["export", "ex", "--pick", "max-flops:10", "--out", str(out)], "no complete trial has"),
    ]
    for args, message in cases:
        res = runner.invoke(app, [*args, "--store", searched])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert not out.exists()


def test_retrain_reports_test_accuracy_and_stores_the_record(searched: str, tmp_path) -> None:
    res = runner.invoke(
        app, ["retrain", "ex", "--pick", "knee", "--epochs", "2", "--out", str(tmp_path / "r"),
              "--store", searched],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "Test accuracy" in res.output
    record = json.loads((tmp_path / "r" / "result.json").read_text())
    assert 0.0 <= record["test_acc"] <= 1.0 and record["test_samples"] == 200
    assert record["train_samples"] == 600  # train + validation: the full training split
    assert (tmp_path / "r" / "model.py").exists() and (tmp_path / "r" / "model.pt").exists()
    stored = read_retrains(Store(searched).load_study("ex").user_attrs)
    assert stored[record["trial"]].test_acc == record["test_acc"]


def test_retrain_schedule_options_reach_training_and_the_record(
    searched: str, tmp_path, monkeypatch
) -> None:
    import fusion_nas.training.protocol as retrain_module

    seen = []
    real = retrain_module.train_proxy

    def spy(model, train, val, config, **kw):
        seen.append(config)
        return real(model, train, val, config, **kw)

    monkeypatch.setattr(retrain_module, "train_proxy", spy)
    res = runner.invoke(
        app, ["retrain", "ex", "--pick", "best", "--epochs", "1", "--lr", "0.02",
              "--batch-size", "50", "--weight-decay", "0", "--out", str(tmp_path / "a"),
              "--store", searched],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert [(c.epochs, c.lr, c.batch_size, c.weight_decay) for c in seen] == [(1, 0.02, 50, 0.0)]
    record = json.loads((tmp_path / "a" / "result.json").read_text())
    assert (record["lr"], record["batch_size"], record["weight_decay"]) == (0.02, 50, 0.0)
    assert "lr 0.02, batch 50" in " ".join(res.output.split())
    seen.clear()  # without the options: the search's proxy settings
    res = runner.invoke(
        app, ["retrain", "ex", "--pick", "best", "--epochs", "1", "--out", str(tmp_path / "b"),
              "--store", searched],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    proxy = Store(searched).search_record("ex").proxy
    assert [(c.lr, c.batch_size, c.weight_decay) for c in seen] == [
        (proxy["lr"], proxy["batch_size"], proxy["weight_decay"])
    ]


def test_pick_trial_rules() -> None:
    df = pd.DataFrame(
        {
            "number": [0, 1, 2, 3, 4],
            "status": ["complete", "complete", "failed", "complete", "complete"],
            "val_acc": [0.5, 0.8, None, 0.9, 0.9],
            "macs": [10, 100, 5, 1000, 2000],
        }
    )
    assert pick_trial(df, trial=2)["number"] == 2
    assert pick_trial(df, pick="best")["number"] == 3  # tie on accuracy -> fewer MACs
    assert pick_trial(df, pick="max-flops:500")["number"] == 1
    assert pick_trial(df, pick="knee")["number"] == 1
    with pytest.raises(StoreError, match="does not exist"):
        pick_trial(df, trial=7)
    with pytest.raises(FusionNasError, match="needs a number"):
        pick_trial(df, pick="max-flops:lots")


def test_export_weights_reproduce_the_trial_under_another_thread_count(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    torch.set_num_threads(1)
    res = runner.invoke(
        app,
        ["search", "mnist1d", "--trials", "1", "--epochs", "2", "--train-subset", "800",
         "--name", "th", "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    row = Store(url).trials("th").iloc[0]
    assert row.threads == 1
    torch.set_num_threads(2)  # a different thread count changes CPU training results
    try:
        res = runner.invoke(
            app, ["export", "th", "--trial", "0", "--out", str(tmp_path / "m.py"),
                  "--weights", str(tmp_path / "m.pt"), "--store", url],
        )  # fmt: skip
    finally:
        torch.set_num_threads(1)
    assert res.exit_code == 0, res.output
    assert "differs" not in res.stderr  # re-trained with the trial's 1 thread: identical
