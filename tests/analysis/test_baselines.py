"""fusion_nas.analysis.baselines: exact costs of the paper networks, the designs in each space,
training
with the searches' protocol, storage beside searches and the overlay on the Pareto plots."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from fusion_nas.analysis.baselines import (
    BASELINES,
    Baseline,
    BaselineError,
    PaperCNN,
    PaperGRU,
    Unavailable,
    baselines_for,
    collection_record,
    paper_cnn_cost,
    paper_gru_cost,
    select,
    train_baseline,
    train_baselines,
)
from fusion_nas.analysis.figures import pareto_figure, pareto_figure_data
from fusion_nas.cli.app import app as cli_app
from fusion_nas.errors import StoreError
from fusion_nas.evaluation.trainer import EvalTask, evaluate
from fusion_nas.model.arch import Architecture
from fusion_nas.model.cost import arch_cost, count_cost
from fusion_nas.model.space import load_space, parse_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.records import BaselineRecord, TrialStatus, collection_name
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.training.protocol import TrainingProtocol
from fusion_nas.web import create_app
from fusion_nas.web.api import _version as api_version

with warnings.catch_warnings():  # starlette 1.x asks for httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SPACES = ("mnist1d", "digits", "fashion-mnist", "cifar10", "coatnet-like")
TINY = ProxyConfig(epochs=1, train_subset=64, batch_size=64)  # seconds on synthetic data


def flop_counter_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """MACs by PyTorch's own FLOP counter (a multiply-add is two FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- the paper networks


def test_paper_cnn_is_the_published_network_with_its_exact_cost() -> None:
    model = PaperCNN(1, (40,), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 25, (5,), (2,), (1,)),
        (25, 25, (3,), (2,), (1,)),
        (25, 25, (3,), (2,), (1,)),
    ]
    assert (model.head.in_features, model.head.out_features) == (125, 10)
    x = torch.zeros(1, 1, 40)
    assert paper_cnn_cost(1, (40,), 10) == (31_750, 5_210)
    assert n_params(model) == 5_210
    assert flop_counter_macs(model, x) == 31_750
    assert count_cost(model, x).macs == 31_750
    (cnn,) = [b for b in baselines_for(load_space("mnist1d")) if b.name == "paper-cnn"]
    assert (cnn.macs, cnn.params, cnn.arch) == (31_750, 5_210, None)


@pytest.mark.parametrize("space", ["digits", "fashion-mnist"])
def test_paper_cnn_on_images_is_counted_exactly(space: str) -> None:
    sp = load_space(space)
    (cnn,) = [b for b in baselines_for(sp) if b.name == "paper-cnn"]
    model = cnn.build()
    assert isinstance(model.features[0], torch.nn.Conv2d)
    x = torch.zeros(sp.input_shape(1))
    assert model(x).shape == (1, sp.classes)
    assert (cnn.macs, cnn.params) == (flop_counter_macs(model, x), n_params(model))


def test_paper_gru_is_the_published_network_with_its_exact_cost() -> None:
    model = PaperGRU(1, 40, 10)
    gru = model.gru
    assert (gru.input_size, gru.hidden_size, gru.bidirectional, gru.batch_first) == (
        1,
        6,
        True,
        True,
    )
    assert (model.head.in_features, model.head.out_features) == (40 * 12, 10)
    assert paper_gru_cost(1, 40, 10) == (14_880, 5_134)
    assert n_params(model) == 5_134
    x = torch.randn(3, 1, 40)
    assert model(x).shape == (3, 10)
    assert flop_counter_macs(model, x[:1]) == 14_880
    (gru_b,) = [b for b in baselines_for(load_space("mnist1d")) if b.name == "paper-gru"]
    assert (gru_b.macs, gru_b.params) == (14_880, 5_134)


@pytest.mark.parametrize("space", ["digits", "fashion-mnist", "coatnet-like"])
def test_paper_gru_is_not_offered_for_images(space: str) -> None:
    sp = load_space(space)
    (gru,) = [b for b in baselines_for(sp) if b.name == "paper-gru"]
    assert isinstance(gru, Unavailable) and "sequence spaces only" in gru.reason
    chosen, skipped = select(sp)
    assert "paper-gru" not in [b.name for b in chosen]
    assert "paper-gru" in [b.name for b in skipped]
    with pytest.raises(BaselineError, match=r"'paper-gru' is not available .*available: "):
        select(sp, ["paper-gru"])


# --------------------------------------------------------------------------- the designs


def intended_operators(name: str, n: int) -> list[str]:
    conv = math.ceil(n / 2)
    return {
        "all-conv": ["conv"] * n,
        "all-attention": ["attention"] * n,
        "can": ["parallel"] * n,
        "gated": ["gated"] * n,
        "hvt": ["conv"] * conv + ["attention"] * (n - conv),
    }[name]


@pytest.mark.parametrize("space", SPACES)
def test_designs_are_architectures_of_the_space_with_the_intended_operators(space: str) -> None:
    sp = load_space(space)
    found = {b.name: b for b in baselines_for(sp)}
    assert list(found) == list(BASELINES)
    for name in ("all-conv", "all-attention", "can", "gated", "hvt"):
        b = found[name]
        if isinstance(b, Unavailable):
            # only CAN may be missing: these spaces offer no channel attention
            assert name == "can" and "'channel' attention" in b.reason, (name, b)
            assert all("channel" not in st.attention for st in sp.stages[:1])
            continue
        arch = b.arch
        assert isinstance(arch, Architecture)
        assert sp.validate(arch) == arch  # an architecture of the space, as it is
        assert Architecture.from_json(arch.to_json()) == arch
        ops = [st.operator for st in arch.stages]
        assert ops == intended_operators(name, len(sp.stages)), (name, ops)
        assert all(st.depth >= 1 for st in arch.stages)
        if name == "can":
            assert {st.attention for st in arch.stages} == {"channel"}
        cost = arch_cost(arch, sp)
        assert (b.macs, b.params) == (cost.macs, cost.params)
    # deterministic: the same networks every time
    again = {b.name: b for b in baselines_for(sp) if isinstance(b, Baseline)}
    assert {k: v.arch for k, v in again.items()} == {
        k: v.arch for k, v in found.items() if isinstance(v, Baseline)
    }


def test_every_design_exists_in_mnist1d_with_the_middle_choices() -> None:
    sp = load_space("mnist1d")
    found = {b.name: b for b in baselines_for(sp)}
    assert isinstance(found.pop("resnet20"), Unavailable)  # image spaces only
    for name in VIDEO_DESIGNS:  # video spaces only
        assert "video spaces only" in found.pop(name).reason
    assert all(isinstance(b, Baseline) for b in found.values()), found
    conv = found["all-conv"].arch
    assert [st.width for st in conv.stages] == [8, 16, 32]  # lower middle of each width list
    assert [st.kernel for st in conv.stages] == [5, 3, 3]
    gated = found["gated"].arch
    assert [st.attention for st in gated.stages] == ["global"] * 3
    assert [st.mlp_ratio for st in gated.stages] == [2.0] * 3  # the network's MLP ratio


VIDEO_DESIGNS = (
    "video-3dcnn",
    "video-transformer",
    "video-hybrid",
    "video-parallel",
    "frame-average",
)


def test_the_article_video_rows_are_designs_of_a_video_space() -> None:
    sp = load_space("video-glyphs")
    found = {b.name: b for b in baselines_for(sp)}
    archs = {name: found[name].arch for name in VIDEO_DESIGNS}
    for name, arch in archs.items():
        assert sp.validate(arch) == arch
        cost = arch_cost(arch, sp)
        assert (found[name].macs, found[name].params) == (cost.macs, cost.params)
    stages = {name: arch.stages for name, arch in archs.items()}
    # pure 3-D CNN: conv across frames everywhere; the control: conv within frames only
    assert {(s.operator, s.tkernel) for s in stages["video-3dcnn"]} == {("conv", 3)}
    assert {(s.operator, s.tkernel) for s in stages["frame-average"]} == {("conv", 1)}
    # pure space-time transformer: joint attention over all of a clip's tokens
    assert {(s.operator, s.attention) for s in stages["video-transformer"]} == {
        ("attention", "global")
    }
    # the article's hybrid: conv within each frame first, attention across frames after
    assert [(s.operator, s.tkernel, s.attention) for s in stages["video-hybrid"]] == [
        ("conv", 1, None),
        ("conv", 1, None),
        ("attention", None, "temporal"),
    ]
    assert {(s.operator, s.tkernel, s.attention) for s in stages["video-parallel"]} == {
        ("parallel", 1, "temporal")
    }
    # on the built-in space the hybrid is the cheapest of the three article rows
    macs = {name: found[name].macs for name in VIDEO_DESIGNS}
    assert macs["video-hybrid"] < min(macs["video-3dcnn"], macs["video-transformer"])


def test_the_3d_cnn_needs_a_temporal_kernel_to_offer() -> None:
    text = load_space("video-glyphs").source.replace("tkernel = [1, 3]", "tkernel = 1")
    found = {b.name: b for b in baselines_for(parse_space(text))}
    assert "no temporal kernel above 1" in found["video-3dcnn"].reason
    assert isinstance(found["frame-average"], Baseline)


def test_a_design_the_space_cannot_express_is_skipped_with_its_reason() -> None:
    conv_only = parse_space(
        "name = 'c'\n[input]\nkind = 'sequence'\nlength = 40\nchannels = 1\nclasses = 10\n"
        "[stem]\nwidth = 8\n[[stage]]\noperator = ['conv']\nkernel = [3, 5]\nwidth = [8, 16]\n"
    )
    found = {b.name: b for b in baselines_for(conv_only)}
    assert isinstance(found["all-conv"], Baseline)
    assert isinstance(found["paper-cnn"], Baseline) and isinstance(found["paper-gru"], Baseline)
    for name in ("all-attention", "can", "gated"):
        assert isinstance(found[name], Unavailable)
        assert "does not offer operator" in found[name].reason
    assert "at least two stages" in found["hvt"].reason
    with pytest.raises(BaselineError, match="'gated' is not available for space 'c'"):
        select(conv_only, ["all-conv", "gated"])
    with pytest.raises(BaselineError, match=r"unknown baseline 'nope'; allowed: 'paper-cnn'"):
        select(conv_only, ["nope"])


# --------------------------------------------------------------------------- training


def test_a_baseline_scores_like_a_search_trial_of_the_same_network() -> None:
    """Same split, seed and proxy settings: the baseline's validation accuracy is the one a
    search trial of the same architecture gets."""
    sp = load_space("digits")
    (conv,) = [b for b in baselines_for(sp) if b.name == "all-conv"]
    protocol = TrainingProtocol("synthetic", sp, TINY, seed=3)
    record = train_baseline(conv, protocol, epochs=1)
    trial = evaluate(EvalTask(conv.arch.to_json(), sp.source, "synthetic", TINY, seed=3))
    assert trial.status == TrialStatus.COMPLETE
    assert record.val_acc == trial.val_acc and record.curve == trial.curve
    assert record.threads == torch.get_num_threads() == 1
    assert record.proxy == TINY.to_dict() and record.seed == 3 and record.epochs == 1
    assert record.arch == conv.arch.to_dict() and record.arch_id == conv.arch.arch_id
    assert 0.0 <= record.test_acc <= 1.0
    assert record.test_samples == 200 and record.train_samples == 600  # all training data
    again = train_baseline(conv, protocol, epochs=1)
    assert (again.val_acc, again.test_acc) == (record.val_acc, record.test_acc)  # seeded


class _NaN(torch.nn.Module):
    """A network whose loss is never finite: its training fails at the first step."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :1] * float("nan") + self.bias  # (B, classes)


def test_train_baselines_trains_moves_weights_and_stores_each(tmp_path: Path) -> None:
    """The one baseline loop: every baseline is trained (its weights move away from their
    initial values in both runs), stored at once, and reported; a failing one is reported,
    not stored, and the rest go on."""
    sp = load_space("digits")
    built: list[tuple[torch.nn.Module, dict[str, torch.Tensor]]] = []

    def build() -> torch.nn.Module:
        model = PaperCNN(sp.channels, sp.size, sp.classes)
        built.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
        return model

    probe = Baseline("probe", "paper CNN", None, 1, 1, build)
    broken = Baseline("broken", "NaN", None, 1, 1, lambda: _NaN(sp.classes))
    protocol = TrainingProtocol("synthetic", sp, TINY, seed=1)
    store = Store(f"sqlite:///{tmp_path}/b.db")
    epochs, results = [], []
    run = train_baselines(
        [broken, probe],
        protocol,
        store,
        epochs=2,
        on_epoch=lambda i, b, phase, epoch: epochs.append((i, b.name, phase, epoch)),
        on_result=lambda i, b, rec, why: results.append((i, b.name, rec, why)),
    )
    assert [r.name for r in run.records] == ["probe"] and run.failed[0][0] == "broken"
    assert "non-finite loss" in run.failed[0][1]
    assert epochs == [(1, "probe", "proxy", 0), (1, "probe", "final", 0), (1, "probe", "final", 1)]
    assert [(i, n, why is None) for i, n, _, why in results] == [
        (0, "broken", False),
        (1, "probe", True),
    ]
    assert len(built) == 2  # the proxy run and the final run, each from scratch
    for model, initial in built:
        assert any(not torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    assert [b.name for b in store.baselines(run.study)] == ["probe"]
    assert run.study == collection_name(sp.name, "synthetic")


# --------------------------------------------------------------------------- storage


def record(name: str, val: float, macs: int, *, arch: dict | None = None, **kw) -> BaselineRecord:
    values = dict(
        name=name,
        description=f"{name} <b>network</b>",
        arch=arch,
        arch_desc=name,
        macs=macs,
        params=1000,
        val_acc=val,
        test_acc=val + 0.01,
        epochs=60,
        proxy=TINY.to_dict(),
        seed=0,
        threads=1,
        seconds=1.5,
        created="2026-01-01T00:00:00+00:00",
    )
    return BaselineRecord(**{**values, **kw})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A tiny real search on digits/synthetic and the baselines of its space and dataset."""
    st = Store(f"sqlite:///{tmp_path_factory.mktemp('baselines')}/s.db")
    config = SearchConfig(
        name="s", space=load_space("digits"), dataset="synthetic", trials=2, proxy=TINY
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_search(config, st)
    sp = load_space("digits")
    st.save_baseline(collection_record(sp, "synthetic"), record("paper-cnn", 0.61, 34_000))
    conv = next(b for b in baselines_for(sp) if b.name == "all-conv")
    st.save_baseline(
        collection_record(sp, "synthetic"),
        record("all-conv", 0.72, conv.macs, arch=conv.arch.to_dict()),
    )
    return st


def test_baselines_are_stored_beside_searches_and_not_listed_as_searches(store: Store) -> None:
    name = collection_name("digits", "synthetic")
    assert name == "baselines:digits:synthetic"
    assert list(store.baseline_sets()) == [name]
    assert store.search_names() == ["s"]
    assert [row["name"] for row in store.summaries()] == ["s"]
    assert not store.has_search(name)
    with pytest.raises(StoreError, match="no search named 'baselines:digits:synthetic'"):
        store.trials(name)
    stored = store.baselines(name)
    assert [(b.name, b.val_acc) for b in stored] == [("paper-cnn", 0.61), ("all-conv", 0.72)]
    rec = store.baseline_sets()[name]
    assert rec.input_key() == ("image", 1, (8, 8), 10) and rec.dataset == "synthetic"
    listed = CliRunner().invoke(cli_app, ["results", "--store", store.url])
    assert listed.exit_code == 0 and "baselines:" not in listed.output


def test_storing_a_baseline_again_replaces_it(tmp_path: Path) -> None:
    import optuna

    st = Store(f"sqlite:///{tmp_path}/r.db")
    coll = collection_record(load_space("digits"), "synthetic")
    name = st.save_baseline(coll, record("paper-cnn", 0.5, 34_000))
    st.save_baseline(coll, record("hvt", 0.6, 80_000))
    st.save_baseline(coll, record("paper-cnn", 0.7, 34_000, created="2026-02-01T00:00:00+00:00"))
    assert [(b.name, b.val_acc) for b in st.baselines(name)] == [("paper-cnn", 0.7), ("hvt", 0.6)]
    study = optuna.load_study(study_name=name, storage=st.storage)
    assert len(study.trials) == 2  # no duplicates left behind
    assert sorted(t.values[0] for t in study.trials) == [0.6, 0.7]  # optuna-dashboard's view
    with pytest.raises(StoreError, match="no baseline collection named 'nope'"):
        st.baselines("nope")


def test_a_search_is_never_overwritten_by_baselines(store: Store, tmp_path: Path) -> None:
    st = Store(f"sqlite:///{tmp_path}/x.db")
    coll = collection_record(load_space("digits"), "synthetic")
    st.create_study(collection_name("digits", "synthetic"), store.search_record("s"))
    with pytest.raises(StoreError, match="is not a baseline collection"):
        st.save_baseline(coll, record("paper-cnn", 0.5, 34_000))
    assert st.search_names() == ["baselines:digits:synthetic"]


def test_a_search_sees_the_baselines_of_its_dataset_and_input(store: Store, tmp_path) -> None:
    search = store.search_record("s")
    assert [label for label, _ in store.baselines_for(search)] == ["paper-cnn", "all-conv"]
    other_data = dataclasses.replace(search, dataset="digits")
    assert store.baselines_for(other_data) == []
    other_input = dataclasses.replace(search, space_toml=load_space("mnist1d").source)
    assert store.baselines_for(other_input) == []
    # Another space with the same input on the same dataset: its designs are labelled with the
    # space; the paper networks, the same in every space, are shown once.
    st = Store(f"sqlite:///{tmp_path}/o.db")
    own = collection_record(load_space("digits"), "synthetic")
    other = dataclasses.replace(own, space_name="digits-wide")
    st.save_baseline(other, record("paper-cnn", 0.3, 34_000))
    st.save_baseline(other, record("all-conv", 0.4, 9_000, arch={"space": "digits-wide"}))
    st.save_baseline(own, record("paper-cnn", 0.6, 34_000))
    got = [(label, b.val_acc) for label, b in st.baselines_for(search)]
    assert got == [("paper-cnn", 0.6), ("all-conv [digits-wide]", 0.4)]


# --------------------------------------------------------------------------- overlay


def baseline_trace(figure: dict) -> dict:
    (trace,) = [t for t in figure["data"] if (t.get("meta") or {}).get("role") == "baselines"]
    return trace


def check_points(trace: dict) -> None:
    assert trace["text"] == ["paper-cnn", "all-conv"]
    assert trace["x"] == [34_000, 80_544] and trace["y"] == [0.61, 0.72]
    assert trace["marker"]["symbol"] == "diamond"
    assert "customdata" not in trace  # a click on a baseline opens no trial
    hover = trace["hovertext"][0]
    assert "<b>paper-cnn</b> (baseline)" in hover and "MACs 34,000, params 1,000" in hover
    assert "val acc 0.6100 (proxy, 1 epochs)" in hover and "test acc 0.6200" in hover
    assert "&lt;b&gt;network&lt;/b&gt;" in hover  # descriptions are text, escaped


def test_figure_data_keeps_baselines_apart_from_the_search(store: Store) -> None:
    df = store.trials("s")
    plain = pareto_figure_data({"s": df})
    data = pareto_figure_data({"s": df}, baselines=store.baselines_for(store.search_record("s")))
    assert plain["baselines"] == []
    assert [b["label"] for b in data["baselines"]] == ["paper-cnn", "all-conv"]
    assert data["searches"] == plain["searches"] and data["ref_macs"] == plain["ref_macs"]
    assert data["baselines"][1]["stages"][0].startswith("stage 0: conv")
    check_points(baseline_trace(pareto_figure(data).to_plotly_json()))
    # none stored: the figure is unchanged
    assert (
        pareto_figure(plain).to_plotly_json()
        == pareto_figure(pareto_figure_data({"s": df}, baselines=[])).to_plotly_json()
    )


def test_pareto_report_shows_labelled_baselines(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "p.html"
    res = CliRunner().invoke(cli_app, ["pareto", "s", "--out", str(out), "--store", store.url])
    assert res.exit_code == 0, res.output
    assert "2 baseline(s)" in res.output
    page = out.read_text()
    raw = re.search(r'<script type="application/json" id="figure-data">(.*?)</script>', page, re.S)
    check_points(baseline_trace(json.loads(raw.group(1))))
    assert '<table id="baselines">' in page and "paper-cnn &lt;b&gt;network&lt;/b&gt;" in page


def test_dashboard_search_api_shows_labelled_baselines(store: Store) -> None:
    client = TestClient(create_app(store), raise_server_exceptions=False)
    res = client.get("/api/search", params={"name": "s"})
    assert res.status_code == 200
    data = res.json()
    check_points(baseline_trace(data["figures"]["pareto"]))
    assert [(b["label"], b["val_acc"], b["test_acc"]) for b in data["baselines"]] == [
        ("paper-cnn", 0.61, 0.62),
        ("all-conv", 0.72, 0.73),
    ]
    page = client.get("/search", params={"name": "s"})
    assert page.status_code == 200 and 'id="baselines"' in page.text
    since = client.get("/api/search", params={"name": "s", "since": data["version"]}).json()
    assert since["unchanged"] is True
    # a baseline stored (or replaced) later changes the version, so an open page redraws
    df, rec = store.trials("s"), store.search_record("s")
    pairs = store.baselines_for(rec)
    assert api_version(df, rec, pairs) == data["version"]
    newer = [*pairs[:1], ("all-conv", dataclasses.replace(pairs[1][1], created="2027"))]
    assert api_version(df, rec, newer) != data["version"]
