"""``--device``: spec checking, ``auto``, GPUs round-robin over workers, and the recorded name.

Everything here runs on the CPU: GPUs are faked (``torch.cuda.is_available`` and
``device_count`` patched) where only the assignment is tested, never touched. The one test that
trains on a GPU is marked ``gpu`` and is deselected (see tests/conftest.py) without CUDA.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import fusion_nas.training.devices as devices
from fusion_nas.cli.app import app
from fusion_nas.evaluation.trainer import EvalTask, InlinePool, ProcessPool, _Worker
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import _make_pool
from fusion_nas.store.records import TrialStatus, read_retrains
from fusion_nas.store.store import Store
from fusion_nas.training.devices import DeviceError, device_name, parse_device, worker_devices
from fusion_nas.training.loop import ProxyConfig

runner = CliRunner()


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


@pytest.fixture()
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with neither CUDA nor MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def fake_gpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Pretend this machine has ``n`` CUDA devices (nothing is allocated on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def search_args(url: str, name: str, *extra: str) -> list[str]:
    return [
        "search", "digits", "--dataset", "synthetic", "--trials", "2", "--epochs", "1",
        "--train-subset", "64", "--name", name, "--store", url, *extra,
    ]  # fmt: skip


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [("auto", "auto"), ("CPU", "cpu"), (" cuda ", "cuda"), ("cuda:1", "cuda:1"), ("mps", "mps")],
)
def test_every_allowed_form_parses(spec: str, canonical: str) -> None:
    assert parse_device(spec) == canonical


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:-1", "cuda:x", "cuda0", "", "tpu", "cpu:0"])
def test_a_bad_spec_is_one_line_naming_it_and_the_allowed_forms(bad: str) -> None:
    with pytest.raises(DeviceError) as err:
        parse_device(bad)
    message = str(err.value)
    assert f"--device {bad!r} is not a device" in message and "\n" not in message
    assert "'auto', 'cpu', 'cuda', 'cuda:N', 'mps'" in message


def test_the_search_config_refuses_a_bad_spec() -> None:
    space = load_space("digits")
    with pytest.raises(DeviceError, match="'gpu' is not a device"):
        SearchConfig(name="x", space=space, dataset="synthetic", device="gpu")
    assert SearchConfig(name="x", space=space, dataset="synthetic").device == "auto"


# --------------------------------------------------------------------------- what is present


def test_auto_is_the_cpu_without_an_accelerator(no_accelerator: None) -> None:
    assert worker_devices("auto", 3) == ["cpu", "cpu", "cpu"]
    assert worker_devices("cpu", 2) == ["cpu", "cpu"]


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "mps"])
def test_an_absent_device_is_refused_naming_what_is_present(no_accelerator: None, spec) -> None:
    with pytest.raises(DeviceError) as err:
        worker_devices(spec, 1)
    message = str(err.value)
    assert message.startswith(f"--device {spec!r}: no ") and message.endswith("present: cpu")


def test_auto_prefers_cuda_then_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert worker_devices("auto", 2) == ["mps", "mps"]
    fake_gpus(monkeypatch, 1)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)  # both present: CUDA wins
    assert worker_devices("auto", 2) == ["cuda:0", "cuda:0"]


@pytest.mark.parametrize("spec", ["auto", "cuda"])
def test_workers_get_the_gpus_round_robin(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    fake_gpus(monkeypatch, 2)
    assert worker_devices(spec, 5) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices(spec, 1) == ["cuda:0"]


def test_one_named_gpu_takes_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    assert worker_devices("cuda:1", 3) == ["cuda:1"] * 3
    with pytest.raises(DeviceError) as err:
        worker_devices("cuda:2", 1)
    assert str(err.value) == (
        "--device 'cuda:2': there is no GPU 2 on this machine; "
        "present: cpu, cuda:0..cuda:1 (2 GPUs)"
    )


def test_device_names() -> None:
    assert device_name("cpu") == "cpu"
    if torch.cuda.is_available():  # the real name, as a trial records it
        assert device_name("cuda:0") == f"cuda:0 ({torch.cuda.get_device_name(0)})"


# --------------------------------------------------------------------------- the pools


class _Conn:
    """Stands in for a worker's pipe: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, obj: Any) -> None:
        self.sent.append(obj)


class _Process:
    pid = 0

    def is_alive(self) -> bool:
        return True


def test_each_worker_process_trains_on_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    # No process is started and nothing touches CUDA: each slot's pipe keeps its tasks.
    monkeypatch.setattr(ProcessPool, "_start", lambda self: _Worker(_Process(), _Conn()))
    pool = _make_pool(3, "auto")
    assert isinstance(pool, ProcessPool)
    task = EvalTask(arch_json="{}", space_source="", dataset="synthetic", proxy=ProxyConfig())
    for key in range(3):
        pool.submit(key, task)
    sent = [w.conn.sent[0] for w in pool._workers]
    assert [t.device for t in sent] == ["cuda:0", "cuda:1", "cuda:0"]
    assert {t.threads for t in sent} == {pool.threads}


def test_one_worker_trains_in_process_on_the_resolved_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_gpus(monkeypatch, 2)
    pool = _make_pool(1, "cuda:1")
    assert isinstance(pool, InlinePool) and pool.device == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _make_pool(1, "auto").device == "cpu"


# --------------------------------------------------------------------------- end to end (CPU)


def test_a_cpu_search_records_the_device_next_to_the_threads(url: str) -> None:
    res = runner.invoke(app, search_args(url, "on-cpu", "--device", "cpu"))
    assert res.exit_code == 0, res.output
    for record in Store(url).records("on-cpu"):
        assert record.status == TrialStatus.COMPLETE
        assert record.device == "cpu" and record.threads == torch.get_num_threads()
    shown = runner.invoke(app, ["results", "on-cpu", "--store", url, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(shown.output)))
    columns = list(rows[0])
    assert columns.index("device") == columns.index("threads") + 1
    assert [row["device"] for row in rows] == ["cpu", "cpu"]
    # The device is not part of what a score means: the same search resumes with another spec.
    again = runner.invoke(app, search_args(url, "on-cpu", "--device", "auto"))
    assert again.exit_code == 0 and "different" not in again.output


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("gpu", "--device 'gpu' is not a device; use one of: 'auto', 'cpu'"), ("cuda", "no CUDA")],
)
def test_the_cli_refuses_a_bad_or_absent_device_in_one_line_before_writing(
    url: str, tmp_path: Path, no_accelerator: None, spec: str, expected: str
) -> None:
    res = runner.invoke(app, search_args(url, "bad", "--device", spec))
    assert res.exit_code == 2, res.output
    assert expected in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output
    assert not (tmp_path / "store.db").exists() or not Store(url).has_search("bad")


def test_retrain_and_baselines_train_on_the_device_and_record_it(url: str, tmp_path: Path) -> None:
    res = runner.invoke(app, search_args(url, "re"))
    assert res.exit_code == 0, res.output
    out = tmp_path / "retrained"
    res = runner.invoke(
        app, ["retrain", "re", "--trial", "0", "--epochs", "1", "--device", "cpu", "--out",
              str(out), "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "on cpu)" in res.output
    assert json.loads((out / "result.json").read_text())["device"] == "cpu"
    assert read_retrains(Store(url).load_study("re").user_attrs)[0].device == "cpu"
    weights = torch.load(out / "model.pt", weights_only=True)  # saved from the CPU, always
    assert {t.device for t in weights.values()} == {torch.device("cpu")}
    res = runner.invoke(
        app, ["baselines", "digits", "--dataset", "synthetic", "--epochs", "1", "--proxy-epochs",
              "1", "--train-subset", "64", "--only", "paper-cnn", "--device", "cpu",
              "--store", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (baseline,) = Store(url).baselines("baselines:digits:synthetic")
    assert baseline.device == "cpu" and baseline.threads == torch.get_num_threads()


@pytest.mark.parametrize("command", ["retrain", "baselines"])
def test_retrain_and_baselines_refuse_a_bad_device_in_one_line(
    url: str, command: str, no_accelerator: None
) -> None:
    args = {
        "retrain": ["retrain", "nope", "--trial", "0", "--store", url],
        "baselines": ["baselines", "digits", "--dataset", "synthetic", "--store", url],
    }[command]
    for spec, expected in (("gpu", "'gpu' is not a device"), ("cuda:1", "no CUDA device")):
        res = runner.invoke(app, [*args, "--device", spec])
        assert res.exit_code == 2, res.output
        assert expected in res.stderr and len(res.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- a real GPU


@pytest.mark.gpu
def test_a_gpu_search_trains_on_cuda_and_records_the_gpu_name(url: str) -> None:
    res = runner.invoke(app, search_args(url, "on-gpu", "--device", "cuda", "--workers", "2"))
    assert res.exit_code == 0, res.output
    names = {
        f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
    }
    trials = Store(url).records("on-gpu")
    assert [t.status for t in trials] == [TrialStatus.COMPLETE] * 2
    assert {t.device for t in trials} <= names
    if torch.cuda.device_count() > 1:  # round-robin: two workers, two GPUs
        assert len({t.device for t in trials}) == 2


# --------------------------------------------------------------------------- the conftest hook

GPU_SUITE = """
import pytest

@pytest.mark.gpu
def test_on_gpu():
    pass

def test_on_cpu():
    pass
"""


@pytest.mark.parametrize("cuda", [False, True])
def test_gpu_tests_are_deselected_and_counted_without_cuda(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cuda: bool
) -> None:
    pytester.makeconftest((Path(__file__).parents[1] / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    pytester.makepyfile(test_toy=GPU_SUITE)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setenv("FUSION_NAS_NO_SKIP", "1")  # as in CI: deselected, so nothing fails
    result = pytester.runpytest()
    if cuda:
        result.assert_outcomes(passed=2)
        assert "deselected: no CUDA device" not in result.stdout.str()
    else:
        result.assert_outcomes(passed=1, deselected=1)
        result.stdout.fnmatch_lines(["1 GPU test(s) deselected: no CUDA device"])
    assert result.ret == 0


# --------------------------------------------------------------------------- trials per GPU


def test_trials_per_device_puts_n_workers_on_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    assert worker_devices("cuda", 1, 3) == ["cuda:0", "cuda:1"] * 3
    assert worker_devices("auto", 1, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_devices("cuda", 5, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda:1", 1, 3) == ["cuda:1"] * 3
    assert worker_devices("cuda", 1) == ["cuda:0"]  # not given: --workers alone decides


def test_trials_per_device_is_ignored_off_cuda_and_checked(no_accelerator: None) -> None:
    assert worker_devices("cpu", 1, 4) == ["cpu"]
    assert worker_devices("auto", 2, 4) == ["cpu", "cpu"]
    for bad in (0, -1):
        with pytest.raises(
            DeviceError, match=f"--trials-per-device must be a positive integer, got {bad}"
        ):
            worker_devices("cpu", 1, bad)


def test_a_pool_with_trials_per_device_has_a_process_per_trial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_gpus(monkeypatch, 2)
    monkeypatch.setattr(ProcessPool, "_start", lambda self: _Worker(_Process(), _Conn()))
    pool = _make_pool(1, "cuda", trials_per_device=2)
    assert isinstance(pool, ProcessPool) and len(pool._workers) == 4
    assert [w.device for w in pool._workers] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert pool.free == 4
    one = _make_pool(1, "cuda:0", trials_per_device=1)
    assert isinstance(one, InlinePool) and one.device == "cuda:0"


def test_the_search_hands_its_trials_per_device_to_the_pool(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    import fusion_nas.search.session as session

    asked: list[tuple[Any, ...]] = []
    real = session.make_pool

    def spy(evaluator: Any, workers: int, device: str, **kw: Any) -> Any:
        asked.append((workers, device, kw.get("trials_per_device")))
        return real(evaluator, workers, "cpu")  # trains here, on the CPU

    monkeypatch.setattr(session, "make_pool", spy)
    res = runner.invoke(
        app, search_args(url, "per-gpu", "--device", "cpu", "--trials-per-device", "3")
    )
    assert res.exit_code == 0, res.output
    assert asked == [(1, "cpu", 3)]
    bad = runner.invoke(app, search_args(url, "per-gpu-0", "--trials-per-device", "0"))
    assert (
        bad.exit_code == 2 and "--trials-per-device must be a positive integer, got 0" in bad.output
    )
