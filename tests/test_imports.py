"""The layer contract (``.importlinter``) holds, fails on a forbidden import, and what the
light imports really load.

The contract is checked by import-linter in a fresh process; the last tests import modules in a
fresh interpreter and look at ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / ".importlinter"
_LINT = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
_LOADED = (
    "import json, sys; import {module}; "
    "print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} "
    "- set(sys.stdlib_module_names))))"
)


def _env(root: Path) -> dict[str, str]:
    """The environment of a child process that imports ``fusion_nas`` from ``root``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on ``root``'s ``.importlinter`` and ``fusion_nas``, without its cache."""
    return subprocess.run(
        [sys.executable, "-c", _LINT, "--no-cache", "--no-logo", str(root / ".importlinter")],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=120,
    )


def loaded(module: str) -> set[str]:
    """Top-level names of the non-stdlib modules that ``import module`` loads, in a fresh
    interpreter (``__main__`` and site hooks such as editable-install finders dropped)."""
    out = subprocess.run(
        [sys.executable, "-c", _LOADED.format(module=module)],
        cwd=ROOT,
        env=_env(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return {m for m in json.loads(out) if not m.startswith("_") and m != "__main__"}


def test_the_contract_holds() -> None:
    result = lint(ROOT)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "0 broken" in out and "BROKEN" not in out


@pytest.fixture(scope="module")
def broken_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package and contract with two forbidden imports appended."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(
        ROOT / "fusion_nas",
        root / "fusion_nas",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(CONTRACT, root / ".importlinter")
    for rel, line in [
        ("deploy/export.py", "from fusion_nas.store.store import Store"),
        ("model/nets.py", "import optuna"),
    ]:
        path = root / "fusion_nas" / rel
        path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    return root


def test_the_contract_fails_on_a_forbidden_import(broken_copy: Path) -> None:
    result = lint(broken_copy)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    # The layers and the deploy contract both name the store import, the nets one optuna.
    assert "fusion_nas.deploy.export -> fusion_nas.store.store" in out, out
    assert "fusion_nas.deploy is not allowed to import fusion_nas.store" in out, out
    assert "fusion_nas.model.nets is not allowed to import optuna" in out, out
    assert "fusion_nas.model.nets -> optuna" in out, out
    assert "KEPT" in out  # the strategies and core contracts still hold


def test_nets_loads_only_torch() -> None:
    torch_alone = loaded("torch")
    assert "torch" in torch_alone
    extra = loaded("fusion_nas.model.nets") - torch_alone
    assert extra == {"fusion_nas"}, extra


def test_the_package_and_the_records_load_no_torch() -> None:
    top = loaded("fusion_nas")
    assert not top & {"torch", "optuna"}, top
    records = loaded("fusion_nas.store.records")
    assert "torch" not in records, records


def test_spaces_and_the_dashboard_api_load_no_torch() -> None:
    # the space parser reads nets.py's configs through model.configs; the dashboard's figures
    # list operators through the registry: neither needs torch until a network is built
    for module in (
        "fusion_nas.model.space",
        "fusion_nas.model.arch",
        "fusion_nas.model.zoo",
        "fusion_nas.web.api",
    ):
        assert "torch" not in loaded(module), module
