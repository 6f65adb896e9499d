"""Shared test setup: deterministic weights, one intra-op thread, and no silent skips in CI.

With ``FUSION_NAS_NO_SKIP=1`` (set by ``scripts/run-tests.sh``, which installs every optional
component first) a skipped test is reported as a failure: a missing browser, database, dataset
or extra would otherwise turn a red suite green. Without it a developer's machine may skip, and
pytest prints each reason (``-ra`` in pyproject). Tests marked ``gpu`` are deselected, not
skipped, on a machine without CUDA; the summary says how many.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.net import free_port

NO_SKIP_FLAG = "FUSION_NAS_NO_SKIP"
pytest_plugins = ["pytester"]  # tests/test_conftest.py runs the hooks below on toy suites


def no_skip() -> bool:
    """True when skips must fail (CI and the README's test command)."""
    return os.environ.get(NO_SKIP_FLAG, "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Turn a skip (in setup, call or teardown) into a failure when :func:`no_skip` holds."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not no_skip() or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped with {NO_SKIP_FLAG}=1 (every component is installed here): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """The same for a whole module skipped at import (``pytest.importorskip`` at top level)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and no_skip():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped with {NO_SKIP_FLAG}=1 (every component is installed here): {reason}"
        )


GPU_DESELECTED = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)  # after -k and -m: count only what would have run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a CUDA device, deselect the ``gpu``-marked tests (a skip would fail in CI)."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
    config.stash[GPU_DESELECTED] = len(gpu)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say how many GPU tests did not run, and why."""
    n = config.stash.get(GPU_DESELECTED, 0)
    if n:
        terminalreporter.write_line(f"{n} GPU test(s) deselected: no CUDA device")


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's FUSION_NAS_HOME / FUSION_NAS_STORE must not leak into tests (they set their own)."""
    for name in ("FUSION_NAS_HOME", "FUSION_NAS_STORE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials skip the latency measurement (a second per network) unless a test asks for it
    (--latency, or by clearing FUSION_NAS_LATENCY as
    tests/search/test_latency_objective.py does)."""
    monkeypatch.setenv("FUSION_NAS_LATENCY", "off")


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)
    # One thread, not two: the test models are small, and when the 2 cores are shared (tests
    # running side by side) two OpenMP threads wait on each other and run 10-30x slower.
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a PostgreSQL cluster in a temporary directory; yield a URL to a fresh database."""
    pytest.importorskip("psycopg", reason="needs the postgres extra (psycopg)")
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bindirs:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    bindir = Path(bindirs[-1])
    base = Path(tempfile.mkdtemp(prefix="fusion-nas-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as 'postgres'
        base.chmod(0o755)
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(base / "log"),
        "-w",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas")
        yield f"postgresql://postgres@127.0.0.1:{port}/nas"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)
