"""CLI basics: help texts, ``spaces`` and ``space show``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app

runner = CliRunner()
COMMANDS = [
    "spaces",
    "space",
    "search",
    "results",
    "export",
    "retrain",
    "baselines",
    "pareto",
    "serve",
    "supernet",
    "explain",
    "cost",
]


def test_top_level_help_lists_every_command() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for command in COMMANDS:
        assert command in res.output


@pytest.mark.parametrize("command", [*COMMANDS, "space show"])
def test_every_command_has_help(command: str) -> None:
    res = runner.invoke(app, [*command.split(), "--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_spaces_lists_builtin_spaces_with_sizes() -> None:
    res = runner.invoke(app, ["spaces"])
    assert res.exit_code == 0
    for name, size in [
        ("mnist1d", "1,411,002,320"),
        ("digits", "416"),
        ("fashion-mnist", "179,827,776"),
        ("cifar10", "757,755,648"),
    ]:
        assert name in res.output and size in res.output
    assert "coatnet-like" in res.output


def test_space_show_prints_stage_choices() -> None:
    res = runner.invoke(app, ["space", "show", "mnist1d"])
    assert res.exit_code == 0
    assert "sequence 40x1" in res.output and "1,411,002,320 architectures" in res.output
    assert "global, window, linear, channel" in res.output
    assert "none, pool, conv" in res.output


def test_space_show_bad_input_is_one_line(tmp_path) -> None:
    res = runner.invoke(app, ["space", "show", "nope"])
    assert res.exit_code == 2 and "unknown search space 'nope'; allowed:" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[input]\nkind = 'image'\nsize = [8, 8]\nchannels = 1\nclasses = 2\n"
                   "[stem]\nwidth = 8\n[[stage]]\noperator = ['conv']\nkernel = [4]\n")  # fmt: skip
    res = runner.invoke(app, ["space", "show", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}: stage[0].kernel: " in res.stderr and "4 is even" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_results_show_interrupted_trials_and_count_them(tmp_path) -> None:
    from fusion_nas.store.records import TrialStatus
    from fusion_nas.store.store import Store
    from tests.helpers.records import add_trial, new_study

    url = f"sqlite:///{tmp_path}/store.db"
    store = Store(url)
    study = new_study(store, "cut")
    for seed, status in enumerate(
        (TrialStatus.COMPLETE, TrialStatus.INTERRUPTED, TrialStatus.FAILED)
    ):
        add_trial(store, study, status, acc=0.5, macs=100 + seed, seed=seed)
    listing = runner.invoke(app, ["results", "--store", url, "--format", "csv"])
    assert listing.exit_code == 0, listing.output
    header, row = listing.output.splitlines()[:2]
    fields = dict(zip(header.split(","), row.split(",")))
    assert fields["interrupted"] == "1" and fields["failed"] == "1" and fields["done"] == "2"
    table = runner.invoke(app, ["results", "cut", "--store", url])
    assert table.exit_code == 0 and "interrupted" in table.output
    assert "interrupted by the user" in table.output
    missing = runner.invoke(app, ["results", "nope", "--store", url])
    assert missing.exit_code == 2 and "no search named 'nope'" in missing.stderr
    assert "known searches: 'cut'" in missing.stderr


def test_results_table_shows_the_front_and_the_last_trials(tmp_path) -> None:
    import re

    from fusion_nas.store.records import TrialStatus
    from fusion_nas.store.store import Store
    from tests.helpers.records import add_trial, new_study

    url = f"sqlite:///{tmp_path}/store.db"
    store = Store(url)
    study = new_study(store, "long")
    # trial 0 is the front alone (most accurate and cheapest); 1..5 are dominated
    for seed in range(6):
        acc, macs = (0.9, 100) if seed == 0 else (0.5, 1000 + seed)
        add_trial(store, study, TrialStatus.COMPLETE, acc=acc, macs=macs, seed=seed)

    def numbers(output: str) -> list[int]:
        return [int(n) for n in re.findall(r"^│ (\d+) ", output, re.M)]

    short = runner.invoke(app, ["results", "long", "--store", url, "--limit", "2"])
    assert short.exit_code == 0, short.output
    assert numbers(short.output) == [0, 4, 5]
    assert "3 earlier trials not shown" in " ".join(short.output.split())
    every = runner.invoke(app, ["results", "long", "--store", url, "--limit", "0"])
    assert numbers(every.output) == list(range(6)) and "not shown" not in every.output
    csv = runner.invoke(app, ["results", "long", "--store", url, "-f", "csv", "--limit", "2"])
    assert len(csv.output.strip().splitlines()) == 1 + 6  # other formats hold every trial
