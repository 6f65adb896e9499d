"""``--precision fp32|bf16|fp16``, ``--channels-last`` and ``--compile`` in the proxy training.

Everything runs on the CPU (torch's CPU autocast runs bf16 and fp16). A device that cannot run
a precision is simulated by patching the probe of :mod:`fusion_nas.training.devices`; a CUDA
device by patching torch's capability queries (nothing is allocated on a GPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

import fusion_nas.training.devices as devices
from fusion_nas.cli.app import app
from fusion_nas.search.config import _fingerprint
from fusion_nas.store import records
from fusion_nas.store.store import Store
from fusion_nas.training.devices import PrecisionError, check_precision, usable_precisions
from fusion_nas.training.loop import ProxyConfig, train_proxy

runner = CliRunner()


def _images(n: int = 64, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=gen)  # (N, C, H, W)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()  # learnable: the sign of channel 0's mean
    return TensorDataset(x, y)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # no BatchNorm after it: its bias would get only
        nn.ReLU(),  # rounding noise as gradient, which AdamW blows up differently per layout
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def _train(**proxy: Any) -> tuple[nn.Module, Any]:
    model = _net()
    config = ProxyConfig(epochs=2, batch_size=16, lr=0.01, **proxy)
    result = train_proxy(model, _images(), _images(32, seed=1), config, seed=0)
    return model, result


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float() for p in model.parameters()])


_PROBE = devices._probe  # cached per process; a test may replace it on the module


@pytest.fixture(autouse=True)
def _fresh_probes() -> Any:
    _PROBE.cache_clear()  # a probe that saw a patched torch must not answer the next test
    yield
    _PROBE.cache_clear()


# --------------------------------------------------------------------------- the setting


def test_an_unknown_precision_is_one_line_naming_the_allowed_ones() -> None:
    with pytest.raises(PrecisionError) as err:
        ProxyConfig(precision="fp8")
    assert str(err.value) == "--precision 'fp8' is not a precision; allowed: 'fp32', 'bf16', 'fp16'"


def test_the_old_bf16_flag_means_precision_bf16_and_is_not_stored_again() -> None:
    assert ProxyConfig(bf16=True).precision == "bf16"
    assert ProxyConfig(bf16=False).precision == "fp32"
    stored = ProxyConfig(bf16=True).to_dict()
    assert stored["precision"] == "bf16" and "bf16" not in stored
    with pytest.raises(Exception, match="--bf16 contradicts --precision 'fp16'"):
        ProxyConfig(precision="fp16", bf16=True)


def test_an_old_stored_proxy_reads_as_today_and_keeps_its_fingerprint() -> None:
    old = {**ProxyConfig().to_dict(), "bf16": True}  # as searches stored it before --precision
    for key in ("precision", "channels_last", "compile"):
        old.pop(key)
    assert ProxyConfig(**old).precision == "bf16"  # handles and tables read it this way
    assert ProxyConfig.from_dict(old) == ProxyConfig(precision="bf16")
    assert ProxyConfig.from_dict({**old, "bf16": False}) == ProxyConfig()
    assert ProxyConfig.from_dict({**old, "from_a_newer_version": 1}) == ProxyConfig(bf16=True)


def test_the_throughput_switches_are_not_part_of_what_must_match_on_resume() -> None:
    plain = ProxyConfig().fingerprint()
    assert ProxyConfig(channels_last=True, compile=True).fingerprint() == plain
    assert ProxyConfig(precision="bf16").fingerprint() != plain
    assert "channels_last" not in plain and "compile" not in plain


def test_an_old_search_record_resumes_under_the_new_fields(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    args = ["search", "digits", "--dataset", "synthetic", "--trials", "1", "--epochs", "1",
            "--train-subset", "64", "--name", "old", "--store", url]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    store = Store(url)
    record = store.search_record("old")
    # The record as a search stored it before --precision: `bf16: false`, no new fields.
    new_fields = ("precision", "channels_last", "compile")
    legacy = {k: v for k, v in record.proxy.items() if k not in new_fields} | {"bf16": False}
    study = store.load_study("old", None)
    records.write_search(study, dataclasses.replace(record, proxy=legacy))
    assert _fingerprint(store.search_record("old")) == _fingerprint(record)
    again = runner.invoke(app, [*args[:5], "2", *args[6:], "--channels-last"])
    assert again.exit_code == 0, again.output
    assert "different" not in again.output and len(Store(url).records("old")) == 2
    changed = runner.invoke(app, [*args[:5], "3", *args[6:], "--precision", "bf16"])
    assert changed.exit_code == 2 and "different proxy" in changed.output


# --------------------------------------------------------------------------- training


def test_fp32_is_what_it_was_and_each_precision_trains_differently() -> None:
    fp32_a, res_a = _train()
    fp32_b, res_b = _train(precision="fp32")
    assert torch.equal(_weights(fp32_a), _weights(fp32_b)) and res_a.curve == res_b.curve
    for precision in ("bf16", "fp16"):
        model, result = _train(precision=precision)
        assert result.val_acc is not None and len(result.curve) == 2
        assert torch.isfinite(_weights(model)).all()
        assert not torch.equal(_weights(model), _weights(fp32_a)), precision


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_the_forward_pass_runs_in_the_precision(precision: str, dtype: torch.dtype) -> None:
    model = _net()
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    train_proxy(model, _images(), None, ProxyConfig(epochs=1, batch_size=32, precision=precision))
    assert seen and set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_fp16_steps_through_a_gradient_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, bool]] = []
    real = torch.amp.GradScaler

    def recording(device: str, *args: Any, enabled: bool = True, **kw: Any) -> Any:
        made.append((device, enabled))
        return real(device, *args, enabled=enabled, **kw)

    monkeypatch.setattr(torch.amp, "GradScaler", recording)
    _train(precision="fp16")
    _train(precision="bf16")
    assert made == [("cpu", True), ("cpu", False)]


def test_an_fp16_run_stopped_and_resumed_equals_one_run() -> None:
    config = ProxyConfig(epochs=3, batch_size=16, precision="fp16")
    whole = _net()
    full = train_proxy(whole, _images(), _images(32, 1), config, seed=0)
    part = _net()
    first = train_proxy(part, _images(), _images(32, 1), config, seed=0, stop_after=1)
    assert first.state is not None
    rest = train_proxy(part, _images(), _images(32, 1), config, seed=0, resume=first.state)
    assert rest.curve == full.curve
    assert torch.equal(_weights(part), _weights(whole))


def test_channels_last_lays_out_the_network_and_its_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layouts: list[bool] = []
    real_net = _net

    def hooked() -> nn.Module:
        model = real_net()
        model[0].register_forward_pre_hook(
            lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        return model

    monkeypatch.setattr(__import__(__name__, fromlist=["_net"]), "_net", hooked)
    model, result = _train(channels_last=True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert layouts[:4] == [True] * 4  # the training batches (evaluation passes them as they are)
    plain_model, plain = _train()
    assert not plain_model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(_weights(model), _weights(plain_model), atol=1e-4)  # the same maths
    assert result.curve == pytest.approx(plain.curve, abs=0.05)


def test_channels_last_leaves_a_sequence_network_alone() -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 6, 2))
    data = TensorDataset(torch.randn(32, 2, 8), torch.randint(0, 2, (32,)))  # (N, C, L)
    train_proxy(model, data, None, ProxyConfig(epochs=1, batch_size=16, channels_last=True))
    assert model[0].weight.is_contiguous()


def test_compile_trains_through_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []

    def fake_compile(model: nn.Module, **kw: Any) -> nn.Module:
        compiled.append(model)
        return model  # the real one compiles for seconds; what matters is what trains

    monkeypatch.setattr(torch, "compile", fake_compile)
    model, _ = _train(compile=True)
    assert compiled == [model]
    _train()
    assert len(compiled) == 1


# --------------------------------------------------------------------------- devices


def test_fp32_runs_everywhere_and_this_torch_runs_both_autocasts_on_the_cpu() -> None:
    check_precision("fp32", ["cpu", "cuda:0", "mps"])  # nothing probed, nothing refused
    # Decided from torch itself: torch 2.13's CPU autocast runs bf16 and fp16.
    assert usable_precisions("cpu") == ["fp32", "bf16", "fp16"]


def test_a_cpu_whose_autocast_ignores_fp16_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Older CPU torch warns "target dtype is not supported" and runs fp32: the probe sees it.
    real = torch.autocast

    def no_fp16(device_type: str, dtype: torch.dtype | None = None, **kw: Any) -> Any:
        if dtype == torch.float16:
            return contextlib.nullcontext()
        return real(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", no_fp16)
    with pytest.raises(PrecisionError) as err:
        check_precision("fp16", "cpu")
    message = str(err.value)
    assert message.startswith("--precision 'fp16' cannot run on cpu: torch ")
    assert "has no fp16 autocast on cpu; allowed here: 'fp32', 'bf16'" in message
    assert "\n" not in message
    check_precision("bf16", "cpu")


def test_a_gpu_without_bfloat16_is_refused_without_touching_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    check_precision("fp16", ["cuda:0", "cuda:1"])
    with pytest.raises(PrecisionError, match="'bf16' cannot run on cuda: this GPU has no bfloat16"):
        check_precision("bf16", ["cuda:0"])


def _refuse_fp16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    real = devices._probe

    def probe(device_type: str, precision: str) -> str | None:
        if (device_type, precision) == ("cpu", "fp16"):
            return "no fp16 here"
        return real(device_type, precision)

    monkeypatch.setattr(devices, "_probe", probe)


def test_search_refuses_fp16_on_a_device_that_cannot_before_the_store_opens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _refuse_fp16_on_cpu(monkeypatch)
    db = tmp_path / "s.db"
    res = runner.invoke(
        app,
        ["search", "digits", "--dataset", "synthetic", "--trials", "1", "--epochs", "1",
         "--device", "cpu", "--precision", "fp16", "--store", f"sqlite:///{db}"],
    )  # fmt: skip
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines == [
        "Error: --precision 'fp16' cannot run on cpu: no fp16 here; allowed here: 'fp32', 'bf16'"
    ]
    assert not db.exists()


def test_baselines_refuse_fp16_on_a_device_that_cannot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _refuse_fp16_on_cpu(monkeypatch)
    db = tmp_path / "b.db"
    res = runner.invoke(
        app,
        ["baselines", "digits", "--dataset", "synthetic", "--device", "cpu", "--precision",
         "fp16", "--store", f"sqlite:///{db}"],
    )  # fmt: skip
    assert res.exit_code == 2 and "--precision 'fp16' cannot run on cpu" in res.output
    assert not db.exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--precision", "fp8"], "--precision 'fp8' is not a precision; allowed: 'fp32'"),
        (["--bf16", "--precision", "fp16"], "--bf16 contradicts --precision 'fp16'"),
    ],
)
def test_bad_precision_options_are_one_line(
    tmp_path: Path, extra: list[str], expected: str
) -> None:
    db = tmp_path / "s.db"
    res = runner.invoke(
        app, ["search", "digits", "--dataset", "synthetic", "--store", f"sqlite:///{db}", *extra]
    )
    assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output
    assert not db.exists()


def test_the_deprecated_bf16_switch_still_searches_in_bf16(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    res = runner.invoke(
        app,
        ["search", "digits", "--dataset", "synthetic", "--trials", "1", "--epochs", "1",
         "--train-subset", "64", "--name", "b", "--store", url, "--bf16"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "--bf16 is deprecated; use --precision bf16" in res.output
    assert Store(url).search_record("b").proxy["precision"] == "bf16"
