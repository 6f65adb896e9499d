"""The weight-sharing supernet: exact sub-networks, sharing, limits, training, search, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.nets import FusionNet
from fusion_nas.model.space import parse_space
from fusion_nas.model.supernet import (
    SinglePath,
    SuperNet,
    SupernetError,
    plan_supernet,
    supernet_params,
)
from fusion_nas.search.supernet import (
    inherited_accuracy,
    recalibrate,
    search_supernet,
    train_supernet,
)
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig

runner = CliRunner()

# Every operator and attention variant, kernels, heads, widths, depths (skip included), MLP
# ratios and downsampling choices: small enough to build in a second.
SPACE = """
name = "tiny-super"
[input]
kind = "sequence"
length = 16
channels = 1
classes = 4
[network]
window = 2
[stem]
width = 4
kernel = 3
stride = 2
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3, 5]
heads = [1, 2]
attention = ["window", "linear", "channel"]
mlp_ratio = [1]
width = [4, 8]
depth = [1, 2]
[[stage]]
operator = ["conv", "attention", "gated"]
kernel = [3]
heads = [2]
attention = ["global", "channel"]
mlp_ratio = [0, 1]
width = [8]
depth = [0, 1]
downsample = ["conv", "pool"]
"""
TINY_PROXY = ProxyConfig(epochs=1, batch_size=32, lr=3e-3, train_subset=64)


@pytest.fixture(scope="module")
def space():
    return parse_space(SPACE)


def arch(space, first: dict, second: dict | None = None) -> Architecture:
    """An architecture of SPACE from two stage dicts (a skipped second stage by default)."""
    s2 = StageChoice(**second) if second else StageChoice("skip", 0, 0)
    return space.validate(Architecture(space.name, (StageChoice(**first), s2)))


def covering(space) -> list[Architecture]:
    """Networks covering the four operators, the four attention variants, skip and depths."""
    return [
        arch(space, dict(operator="conv", width=4, kernel=5, depth=2)),
        arch(
            space,
            dict(operator="attention", width=8, heads=2, attention="window"),
            dict(operator="conv", width=8, kernel=3, downsample="pool"),
        ),
        arch(
            space,
            dict(operator="parallel", width=8, kernel=3, heads=1, attention="linear"),
            dict(
                operator="gated",
                width=8,
                kernel=3,
                heads=2,
                attention="global",
                mlp_ratio=1,
                downsample="conv",
            ),
        ),
        arch(
            space,
            dict(operator="gated", width=4, kernel=5, attention="channel", depth=2),
            dict(
                operator="attention", width=8, attention="channel", mlp_ratio=0, downsample="pool"
            ),
        ),
    ]


def test_subnet_computes_exactly_the_supernet_path(space) -> None:
    torch.manual_seed(0)
    net = SuperNet(space)
    x = torch.randn(16, 1, 16)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    archs = covering(space)
    for a in archs:  # a few steps: weights and BatchNorm statistics away from their init
        opt.zero_grad()
        net(x, a).square().mean().backward()
        opt.step()
    net.eval()
    ops = set()
    for a in archs:
        sub = net.subnet(a)
        assert isinstance(sub, FusionNet) and sub.arch == a
        assert sub.cfg == build_model(a, space).cfg  # the very network build_model makes
        sub.eval()
        with torch.no_grad():
            assert torch.allclose(sub(x), net(x, a), atol=1e-6)
        ops |= {s.operator for s in a.stages}
    assert {"conv", "attention", "parallel", "gated", "skip"} <= ops


def test_subnet_is_a_copy_not_a_view(space) -> None:
    net = SuperNet(space)
    a = covering(space)[0]
    sub = net.subnet(a)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_weights_are_shared_between_architectures(space) -> None:
    net = SuperNet(space)
    a, b = covering(space)[0], covering(space)[1]
    # same first stage as `b`, another second stage: stem, stage-0 transition and block shared
    c = arch(
        space,
        dict(operator="attention", width=8, heads=2, attention="window"),
        dict(
            operator="gated",
            width=8,
            kernel=3,
            heads=2,
            attention="global",
            mlp_ratio=0,
            downsample="pool",
        ),
    )
    tb, blocks_b = net.path(b)[0][0]
    tc, blocks_c = net.path(c)[0][0]
    assert tb == tc and blocks_b == blocks_c
    # depth 2 runs the depth-1 block first
    shallow = arch(space, dict(operator="conv", width=4, kernel=5, depth=1))
    assert net.path(a)[0][0][1][0] == net.path(shallow)[0][0][1][0]
    # one step on `c` moves what `b`'s sub-network inherits
    before = net.subnet(b).stages[0][1].attn.qkv.weight.clone()
    net(torch.randn(4, 1, 16), c).sum().backward()
    torch.optim.SGD(net.parameters(), lr=1.0).step()
    assert not torch.equal(before, net.subnet(b).stages[0][1].attn.qkv.weight)


def test_plan_holds_exactly_what_architectures_use(space) -> None:
    net = SuperNet(space)
    used = set()
    for a in space.enumerate():
        stages, head = net.path(a)
        used |= {t for t, _ in stages} | {b for _, names in stages for b in names} | {head}
    held = set(net.transitions) | set(net.blocks) | set(net.heads)
    assert used == held  # every module is used, nothing unreachable is built
    assert net.n_params == sum(p.numel() for p in net.parameters())


def test_parameter_limit_refuses_without_allocating(space) -> None:
    plan = plan_supernet(space)
    n = supernet_params(space, plan)
    with pytest.raises(SupernetError, match=f"more than {n - 1:,} parameters"):
        SuperNet(space, max_params=n - 1)
    with pytest.raises(SupernetError, match="more than 3 distinct blocks"):
        plan_supernet(space, max_modules=3)
    assert SuperNet(space, max_params=n).n_params == n


def test_recalibration_averages_the_batches() -> None:
    model = nn.Sequential(nn.BatchNorm1d(3))
    model[0].running_mean.fill_(100.0)
    x = torch.randn(64, 3) * 2 + 5
    recalibrate(model, TensorDataset(x, torch.zeros(64)), batches=4, batch_size=16, seed=0)
    assert not model.training and model[0].momentum is None
    assert torch.allclose(model[0].running_mean, x.mean(0), atol=1e-5)  # every sample, once


def test_train_supernet_samples_paths_and_learns(space) -> None:
    steps = []
    trained = train_supernet(
        space,
        "synthetic",
        ProxyConfig(epochs=2, batch_size=16, lr=3e-3, train_subset=64),
        on_step=lambda step, total, loss: steps.append((step, total)),
    )
    assert trained.epochs == 2 and trained.steps == 8 and steps[-1] == (8, 8)
    assert all(torch.isfinite(torch.tensor(trained.losses)))
    before = {k: v.clone() for k, v in trained.supernet.state_dict().items()}
    acc = inherited_accuracy(trained, covering(space)[2])
    assert 0.0 <= acc <= 1.0
    after = trained.supernet.state_dict()  # scoring recalibrates a copy, not the supernet
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_supernet_training_moves_the_sampled_paths_weights_and_is_seeded(space) -> None:
    """Every step trains a freshly drawn path (SinglePath through the one training loop): the
    weights move away from their initial values, and the same seed gives the same supernet."""
    proxy = ProxyConfig(epochs=2, batch_size=16, lr=3e-3, train_subset=64)
    torch.manual_seed(5)
    initial = SuperNet(space).state_dict()  # train_supernet seeds, then builds, the same way
    trained = train_supernet(space, "synthetic", proxy, seed=5)
    state = trained.supernet.state_dict()
    moved = [k for k in initial if k.endswith("weight") and not torch.equal(initial[k], state[k])]
    assert trained.supernet.stem[0].weight.detach().ne(initial["stem.0.weight"]).any()
    assert len({k.split(".")[1] for k in moved if k.startswith("blocks.")}) > 1  # many paths
    again = train_supernet(space, "synthetic", proxy, seed=5)
    assert again.losses == trained.losses
    assert all(torch.equal(v, again.supernet.state_dict()[k]) for k, v in state.items())
    model = SinglePath(trained.supernet, seed=1)
    drawn = set()
    for _ in range(6):
        model(torch.randn(2, 1, 16))
        drawn.add(model.arch.arch_id)
    assert len(drawn) > 1  # a new path on every training forward


def test_search_confirms_the_front_in_the_store(space, tmp_path: Path) -> None:
    trained = train_supernet(space, "synthetic", TINY_PROXY)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    result = search_supernet(
        trained, 8, 2, name="sn", store=store, population=4, device="cpu", calib_batches=1
    )
    assert 1 <= len(result.front) <= len(result.candidates) <= 8
    assert len(result.picks) == 2 and result.picks[0] in result.front
    df = store.trials("sn")
    assert sorted(df.arch_id) == sorted(c.arch.arch_id for c in result.picks)
    assert (df.status == "complete").all()
    record = store.search_record("sn")
    assert record.strategy_options["proposed_by"] == "supernet"
    again = search_supernet(
        trained, 8, 2, name="sn", store=store, population=4, device="cpu", calib_batches=1
    )
    assert [c.arch for c in again.picks] == [c.arch for c in result.picks]  # same seed
    assert len(store.trials("sn")) == 2  # held picks are not trained again


def test_search_refuses_bad_numbers(space) -> None:
    trained = train_supernet(space, "synthetic", TINY_PROXY)
    with pytest.raises(SupernetError, match="--evaluations must be at least 1"):
        search_supernet(trained, 0)
    with pytest.raises(SupernetError, match="needs a search name"):
        search_supernet(trained, 2, 1)


def test_cli_supernet_runs_and_confirms(tmp_path: Path) -> None:
    space_file = tmp_path / "tiny.toml"
    space_file.write_text(SPACE, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    args = [
        "supernet", str(space_file), "--dataset", "synthetic", "--epochs", "1",
        "--evaluations", "4", "--confirm", "1", "--confirm-epochs", "1", "--train-subset",
        "32", "--batch-size", "16", "--population", "2", "--calib-batches", "1",
        "--name", "cli-sn", "--store", url, "--device", "cpu",
    ]  # fmt: skip
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "Inherited front" in out.output and "1 confirmed" in out.output
    df = Store(url).trials("cli-sn")
    assert len(df) == 1 and df.status.iloc[0] == "complete"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--evaluations", "0"], "--evaluations 0 is too small"),
        (["--epochs", "0"], "--epochs 0 is too small"),
        (["--supernet-max-params", "10"], "more than 10 parameters"),
        (["--dataset", "nope"], "nope"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    space_file = tmp_path / "tiny.toml"
    space_file.write_text(SPACE, encoding="utf-8")
    base = ["supernet", str(space_file), "--dataset", "synthetic", "--confirm", "0"]
    out = runner.invoke(app, [*base, *extra])
    assert out.exit_code == 2
    assert message in out.output and "Traceback" not in out.output
    assert len([line for line in out.output.splitlines() if "Error" in line]) == 1


def test_a_video_space_is_refused_in_one_line() -> None:
    from fusion_nas.model.space import load_space

    with pytest.raises(SupernetError, match=r"takes video; a supernet takes sequence and image"):
        SuperNet(load_space("video-glyphs"))
