"""The device check runs end to end on the CPU (``--dry-run``) and writes its JSON report.

The real check needs a GPU machine; its dry run goes through every step (install skipped) on a
small generated CIFAR-style archive, so a broken step shows here, not on a lent GPU.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers.benchmarks import BENCHMARKS, load

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_archive(path: Path, per_class: int = 4) -> Path:
    """A .tar.gz laid out like cifar10-jpeg.tar.gz: train/<class>/NNNN.jpg, test/<class>/..."""
    gen = torch.Generator().manual_seed(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", per_class), ("test", per_class // 2)):
            for c, name in enumerate(CLASSES):
                for i in range(n):
                    pixels = (torch.rand(32, 32, 3, generator=gen) * 40 + 20 * c).byte()
                    buf = io.BytesIO()
                    Image.fromarray(pixels.numpy()).save(buf, format="JPEG", quality=75)
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_dry_run_goes_through_every_step_and_reports_json(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "cifar.tar.gz")
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(BENCHMARKS / "gpu_check.sh"), "--dry-run", "--tarball", str(archive),
         "--data", str(tmp_path / "data"), "--out", str(out)],
        capture_output=True, text=True, timeout=850, env=env,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert proc.returncode == 0, json.dumps(report, indent=1)[-4000:] + proc.stderr[-2000:]
    steps = report["steps"]
    assert report["dry_run"] and report["ok"]
    assert list(steps) == ["env", "data", "gpu_tests", "search", "retrain", "throughput", "done"]
    assert steps["data"]["images"] == {"train": 40, "test": 20}
    tests = steps["gpu_tests"]
    assert tests["failures"] == tests["errors"] == 0
    if not torch.cuda.is_available():  # deselected, not skipped, and counted in the note
        assert tests["tests"] == 0 and "GPU test(s) deselected" in tests["deselected_note"]
    search = steps["search"]
    assert (
        search["complete"] >= 1 and search["front"] and "--trials-per-device" in search["command"]
    )
    assert search["gpu_utilisation"]["sampled"] is False  # no nvidia-smi here
    retrained = steps["retrain"]["members"]
    assert retrained and all(0 <= m["test_acc"] <= 1 for m in retrained)
    rows = steps["throughput"]["rows"]
    assert [r["precision"] for r in rows][:2] == ["fp32", "bf16"]
    assert all(r["ratio"] > 0 for r in rows)


def test_the_check_refuses_to_run_for_real_without_cuda(tmp_path: Path, monkeypatch) -> None:
    if torch.cuda.is_available():
        pytest.xfail("this machine has CUDA: the real check would run")
    check = load("gpu_check")
    out = tmp_path / "r.json"
    assert check.main(["--out", str(out), "--tarball", str(tmp_path / "none.tar.gz")]) == 2
    report = json.loads(out.read_text())
    assert report["steps"]["abort"]["error"] == "no CUDA device; use --dry-run"
    assert "data" not in report["steps"]  # nothing was extracted or trained


def test_the_shell_script_names_a_bad_option() -> None:
    proc = subprocess.run(
        [str(BENCHMARKS / "gpu_check.sh"), "--fast"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "unknown option '--fast'; allowed: --dry-run, --out, --tarball, --data" in proc.stderr


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for the GPU machine's python3: logs every call; its pip fails the resolved install
# when FAIL_RESOLVE is set; 'import torch' answers the machine's torch version.
echo "$*" >> "$LOG"
if [ "$*" = "-c import torch; print(torch.__version__)" ]; then
  echo "2.11.0+cu130"
elif [[ "$*" == "-m pip install"*"-c "* ]]; then
  for a in "$@"; do
    if [ -f "$a" ] && grep -q torch "$a"; then cat "$a" >> "$LOG"; fi
  done
  [ -z "${FAIL_RESOLVE:-}" ]
  exit
fi
exit 0
"""


@pytest.mark.parametrize("fail_resolve", [False, True], ids=["resolved", "no-deps"])
def test_the_install_pins_the_machines_torch_and_uses_only_carried_wheels(
    tmp_path: Path, fail_resolve: bool
) -> None:
    root = tmp_path / "checkout"
    (root / "benchmarks").mkdir(parents=True)
    (root / "wheels").mkdir()
    (root / "wheels" / "optuna-5.1.0-py3-none-any.whl").write_bytes(b"")
    script = root / "benchmarks" / "gpu_check.sh"
    script.write_text((BENCHMARKS / "gpu_check.sh").read_text())
    script.chmod(0o755)
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "PYTHON": str(fake), "LOG": str(log)}
    if fail_resolve:
        env["FAIL_RESOLVE"] = "1"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    pip = [c for c in calls if c.startswith("-m pip install")]
    assert all("--no-index" in c for c in pip)  # nothing is fetched: there is no network
    assert pip[0].endswith("-e .") and "--find-links wheels" in pip[0]
    assert "torch==2.11.0+cu130" in calls  # the constraint pip resolved under
    if fail_resolve:
        assert pip[1].endswith("wheels/optuna-5.1.0-py3-none-any.whl") and "--no-deps" in pip[1]
        assert pip[2].endswith("-e .") and "--no-deps" in pip[2]
    else:
        assert len(pip) == 1
    assert calls[-1].startswith("benchmarks/gpu_check.py --install-seconds")
