"""The wheel is complete: built, installed into a fresh venv and run outside the repository.

The wheel and the fresh environment are built offline: the package comes from a copy of this
tree (so the build leaves nothing in the checkout), dependencies from the running environment
(a ``.pth`` file points the fresh venv at its site-packages), so nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILTINS = (
    "cifar10",
    "cifar10-hybrids",
    "coatnet-like",
    "digits",
    "fashion-mnist",
    "hybrids-224",
    "mnist1d",
    "video-glyphs",
)
_NOT_SHIPPED = (
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "results",
    "*.egg-info",
    "*_cache",
    "__pycache__",
)

pytestmark = pytest.mark.slow  # builds a wheel and a venv, then trains one trial: ~30 s


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _fresh_venv(root: Path) -> Path:
    """A venv without fusion-nas that sees the running environment's packages (no download)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A plain path line: the running environment's .pth files (its editable install of this
    # repository among them) are not processed, so fusion_nas can only come from the wheel.
    Path(purelib, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_SHIPPED))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FUSION_NAS_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(COLUMNS="200", FUSION_NAS_HOME=str(root / "home"), PYTHONNOUSERSITE="1")
    pip = [sys.executable, "-m", "pip"]
    wheels = root / "wheels"
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)], root, env
    )
    (wheel,) = wheels.glob("fusion_nas-*.whl")
    venv = _fresh_venv(root)
    _run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)],
        root,
        env,
    )
    outside = root / "elsewhere"
    outside.mkdir()
    return venv, env, outside


def test_package_comes_from_the_wheel(installed: tuple[Path, dict[str, str], Path]) -> None:
    venv, env, outside = installed
    out = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import fusion_nas, fusion_nas.model.space as s; print(fusion_nas.__file__); "
            "print(*s.builtin_spaces()); print(s.load_space('digits').num_architectures())",
        ],
        outside,
        env,
    )
    file, names, count = out.strip().splitlines()
    assert file.startswith(str(venv)), file
    assert not file.startswith(str(REPO))
    assert names.split() == list(BUILTINS)
    assert count == "416"


def test_spaces_command_lists_the_builtin_spaces(
    installed: tuple[Path, dict[str, str], Path],
) -> None:
    venv, env, outside = installed
    out = _run([str(venv / "bin" / "fusion-nas"), "spaces"], outside, env)
    for name in BUILTINS:
        assert name in out, out


def test_one_trial_digits_search(installed: tuple[Path, dict[str, str], Path]) -> None:
    venv, env, outside = installed
    store = f"sqlite:///{outside / 'X.db'}"
    cmd = [str(venv / "bin" / "fusion-nas"), "search", "digits", "--trials", "1", "--epochs", "1"]
    _run([*cmd, "--store", store], outside, env, timeout=600)
    assert (outside / "X.db").is_file()
    out = _run([str(venv / "bin" / "fusion-nas"), "results", "--store", store], outside, env)
    assert "digits" in out, out


def test_editable_install_finds_the_spaces(tmp_path: Path) -> None:
    # `pip install -e .` maps the package to this tree; search_spaces/ is reached through the
    # fusion_nas/search_spaces link, as in the wheel.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_SHIPPED))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FUSION_NAS_"))}
    venv = _fresh_venv(tmp_path)
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps"]
    _run([*pip, "--no-build-isolation", "-e", str(src)], tmp_path, env)
    code = (
        "import fusion_nas, fusion_nas.model.space as s; "
        "print(fusion_nas.__file__, *s.builtin_spaces())"
    )
    file, *names = _run([python, "-c", code], tmp_path, env).split()
    assert file == str(src / "fusion_nas" / "__init__.py")
    assert names == list(BUILTINS)
