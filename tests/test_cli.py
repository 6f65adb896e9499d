"""CLI basics: help texts, ``spaces`` and ``space show``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app

runner = CliRunner()
COMMANDS = ["spaces", "space", "search", "results", "export", "retrain", "pareto", "serve"]


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
    for name, size in [("mnist1d", "1,115,136"), ("digits", "416"), ("fashion-mnist", "73,216")]:
        assert name in res.output and size in res.output
    assert "coatnet-like" in res.output


def test_space_show_prints_stage_choices() -> None:
    res = runner.invoke(app, ["space", "show", "mnist1d"])
    assert res.exit_code == 0
    assert "sequence 40x1" in res.output and "1,115,136 architectures" in res.output
    assert "global, window, linear" in res.output


def test_space_show_bad_input_is_one_line(tmp_path) -> None:
    res = runner.invoke(app, ["space", "show", "nope"])
    assert res.exit_code == 2 and "unknown search space 'nope'; allowed:" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[input]\nkind = 'image'\nsize = [8, 8]\nchannels = 1\nclasses = 2\n"
                   "[stem]\nwidth = 8\n[[stage]]\noperator = ['conv']\nkernel = [4]\n")  # fmt: skip
    res = runner.invoke(app, ["space", "show", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}: stage[0].kernel: kernel size 4 is even" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
