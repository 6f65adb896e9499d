"""Zoo members of a space on the command line: ``search --start-from`` queues them as the first
trials, ``baselines --zoo`` trains them into the baseline collection that ``pareto`` draws."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.model import zoo
from fusion_nas.store.store import Store

runner = CliRunner()

# A zoo network written here (the built-in zoo may not hold one yet): 224x224x3, 1000 classes.
TINY = """\
[input]
kind = "image"
channels = 3
size = [224, 224]
classes = 1000

[stem]
width = 24
stride = 4

[[stage]]
operator = "conv"
width = 32
depth = 2

[[stage]]
operator = "attention"
heads = 2
width = 48
downsample = "conv"

[zoo]
timm = "none"
stage_ends = [0, 1]
"""

# An 8x8 one-channel space (trained on the synthetic data) holding the zoo network scaled down.
HOST = """\
name = "host"

[input]
kind = "image"
channels = 1
size = [8, 8]
classes = 10

[stem]
width = 8

[[stage]]
operator = ["conv", "attention"]
width = [8, 16]

[[stage]]
operator = "conv"
width = 16
downsample = "pool"

[zoo]
members = ["tiny"]
width = 0.5
"""
TINY_RUN = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64"]


@pytest.fixture
def host(tmp_path, monkeypatch) -> Path:
    """The host space file; the zoo is a folder of one network, ``tiny``."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    (folder / "tiny.toml").write_text(TINY)
    monkeypatch.setattr(zoo, "_zoo_dir", lambda: folder)
    path = tmp_path / "host.toml"
    path.write_text(HOST)
    return path


def cli(*args: str):
    return runner.invoke(app, list(args))


def test_start_from_queues_the_member_first_and_results_say_so(host, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    res = cli(
        "search", str(host), *TINY_RUN, "--trials", "3", "--strategy", "optuna:nsga2",
        "--start-from", "tiny", "--name", "z", "--store", url,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    df = Store(url).trials("z")
    first = df[df.number == 0].iloc[0]
    assert first.start_from == {"member": "tiny", "place": 1, "of": 1}
    assert first.arch["base"] == "tiny"
    assert first.arch_desc.startswith("zoo:tiny: ")
    assert first.status == "complete"
    others = df[df.number > 0]
    assert len(others) == 2 and others.start_from.isna().all()  # the strategy proposed these
    assert all("base" not in a for a in others.arch)
    shown = cli("results", "z", "--store", url)
    assert shown.exit_code == 0, shown.output
    assert "zoo member tiny (--start-from)" in shown.output
    # the member exports like any trial: the file builds the scaled zoo network
    out = tmp_path / "member.py"
    res = cli("export", "z", "--trial", "0", "--out", str(out), "--store", url)
    assert res.exit_code == 0, res.output
    namespace: dict = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    import torch

    model = namespace["FusionNet"]().eval()
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == first.params


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start-from", "nope"], "--start-from 'nope' is not a zoo member of space 'host'; "),
        (["--start-from", "tiny", "--strategy", "optuna:grid"], "cannot queue networks"),
        (["--start-from", " , "], "--start-from '' is not a zoo member"),
    ],
)
def test_bad_start_from_is_one_line_exit_2_and_writes_nothing(host, tmp_path, extra, message):
    url = f"sqlite:///{tmp_path}/bad.db"
    args = ["search", str(host), *TINY_RUN, "--trials", "2", "--store", url, *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "bad.db").exists()


def test_start_from_names_each_member_once(host):
    from fusion_nas.model.space import load_space
    from fusion_nas.search.config import SearchConfig

    config = SearchConfig("x", load_space(host), "synthetic", start_from="tiny, tiny")
    assert config.start_from == ("tiny",)
    assert SearchConfig("x", load_space(host), "synthetic").start_from == ()


def test_start_from_a_space_without_members_names_none(tmp_path):
    url = f"sqlite:///{tmp_path}/none.db"
    res = runner.invoke(
        app, ["search", "digits", *TINY_RUN, "--store", url, "--start-from", "mobilevit_xxs"]
    )
    assert res.exit_code == 2
    assert "allowed: none (the space lists no [zoo] members)" in res.stderr
    assert not (tmp_path / "none.db").exists()


def test_baselines_zoo_lists_and_trains_the_members_into_the_collection(host, tmp_path):
    res = cli("baselines", str(host), "--zoo", "--list")
    assert res.exit_code == 0, res.output
    assert "zoo:tiny" in res.output and "Zoo baselines of space host" in res.output
    url = f"sqlite:///{tmp_path}/b.db"
    res = cli(
        "baselines", str(host), "--zoo", "--dataset", "synthetic", "--epochs", "1",
        "--proxy-epochs", "1", "--train-subset", "64", "--store", url,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (record,) = Store(url).baselines("baselines:host:synthetic")
    assert record.name == "zoo:tiny" and record.arch["base"] == "tiny"
    assert record.val_acc is not None and record.test_acc is not None
    # a search of the space draws it beside its front (as pareto and the dashboard do)
    res = cli("search", str(host), *TINY_RUN, "--trials", "1", "--name", "s", "--store", url)
    assert res.exit_code == 0, res.output
    store = Store(url)
    labels = [label for label, _ in store.baselines_for(store.search_record("s"))]
    assert labels == ["zoo:tiny"]


def test_baselines_zoo_refuses_unknown_members_and_spaces_without_any(host):
    res = cli("baselines", str(host), "--zoo", "--only", "nope", "--list")
    assert res.exit_code == 0  # --list shows every member; --only is for training
    res = cli("baselines", str(host), "--zoo", "--only", "nope", "--dataset", "synthetic")
    assert res.exit_code == 2
    assert "'nope' is not a zoo member of space 'host'; allowed: 'tiny'" in res.stderr
    res = cli("baselines", "digits", "--zoo", "--list")
    assert res.exit_code == 2
    assert "space 'digits' lists no zoo members" in res.stderr


def test_space_show_lists_the_members_with_their_cost(host):
    from fusion_nas.model.cost import arch_cost
    from fusion_nas.model.space import load_space

    res = cli("space", "show", str(host))
    assert res.exit_code == 0, res.output
    space = load_space(host)
    assert f"{space.num_architectures():,} architectures" in res.output
    assert "Zoo members (width x0.5, depth x1" in res.output
    cost = arch_cost(space.member_arch("tiny"), space)
    row = next(line for line in res.output.splitlines() if "│ tiny" in line)
    assert f"{cost.macs:,}" in row and f"{cost.params:,}" in row
