"""The light commands start without the training stack: no torch for help, spaces and results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
sys.argv = ["fusion-nas", *json.loads(sys.argv[1])]
from fusion_nas.cli.app import main
try:
    main()
except SystemExit:
    pass
heavy = ("torch", "pandas", "optuna", "sqlalchemy", "plotly")
print(json.dumps({m: m in sys.modules for m in heavy}), file=sys.stderr)
"""


def loaded(*args: str) -> dict[str, bool]:
    """Which heavy modules a fresh interpreter imported to run ``fusion-nas ARGS``."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_help_imports_nothing_heavy() -> None:
    assert not any(loaded("--help").values())


@pytest.mark.parametrize(
    "args", [("results", "--help"), ("results", "--store", "sqlite:///nowhere/none.db")]
)
def test_results_imports_no_torch(args: tuple[str, ...]) -> None:
    assert not loaded(*args)["torch"]


@pytest.mark.parametrize(
    "args", [("--help",), ("spaces",), ("space", "show", "mnist1d"), ("space", "show", "digits")]
)
def test_space_commands_import_no_torch(args: tuple[str, ...]) -> None:
    assert not loaded(*args)["torch"], args


def test_help_lists_every_command() -> None:
    from typer.testing import CliRunner

    from fusion_nas.cli.app import COMMANDS, app

    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert name in res.output


def test_results_of_a_search_imports_no_torch(tmp_path) -> None:
    from fusion_nas.store.records import TrialStatus
    from fusion_nas.store.store import Store
    from tests.helpers.records import add_trial, new_study

    url = f"sqlite:///{tmp_path}/store.db"
    store = Store(url)
    study = new_study(store, "light")
    for seed, status in enumerate((TrialStatus.COMPLETE, TrialStatus.INTERRUPTED)):
        add_trial(store, study, status, acc=0.5, macs=100 + seed, seed=seed)
    for args in (("results", "--store", url), ("results", "light", "--store", url, "-f", "json")):
        assert not loaded(*args)["torch"], args
