"""fusion_nas.analysis.figures: the figure data (points, front, knee, hover text, colours) and its
figures.

Figures are ``plotly.graph_objects.Figure`` objects; tests read their traces, never pixels.
Most tests draw a tiny real search (fixture ``real``); those that pin a given front, knee or
hypervolume step use hand-picked values (``make_frame``), which no real search can choose.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from html.parser import HTMLParser

import optuna
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from optuna.trial import TrialState
from torch import nn

from fusion_nas.analysis.figures import (
    RUG_ROWS,
    curve_figure,
    hypervolume_curve,
    hypervolume_figure,
    operator_figure,
    operator_frequencies,
    pareto_figure,
    pareto_figure_data,
    search_color,
    stage_lines,
)
from fusion_nas.evaluation import trainer as evaluate_module
from fusion_nas.model.nets import OPS, register_op
from fusion_nas.model.space import load_space
from fusion_nas.pareto import hypervolume, knee_index, pareto_mask
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.queries import trials_frame
from fusion_nas.store.records import SearchRecord, TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.web.report import report_data, report_html

XSS_NAMES = ("<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>")

# (status, val_acc, macs): a front of three, dominated points, and every off-plane status.
SPEC = [
    ("complete", 0.50, 100_000),
    ("complete", 0.70, 150_000),
    ("complete", 0.60, 160_000),  # dominated by #1
    ("failed", None, 120_000),  # failed in training: cost known
    ("complete", 0.80, 400_000),
    ("infeasible", None, 900_000),  # over budget: never trained
    ("complete", 0.40, 300_000),  # dominated
    ("failed", None, None),  # failed before costing
    ("running", None, 200_000),
    ("complete", 0.75, 200_000),
]


def make_frame(spec: list[tuple[str, float | None, int | None]], seed: int = 0) -> pd.DataFrame:
    """Trials with hand-picked values, in the format the search records them."""
    space = load_space("digits")
    trials = []
    for number, (status, acc, macs) in enumerate(spec):
        arch = space.sample(seed * 1000 + number)
        attrs = {
            "arch": arch.to_dict(),
            "arch_id": arch.arch_id,
            "arch_desc": arch.describe(),
            "params": 1000 + number,
            "status": status,
            "curve": [acc / 2, acc] if acc is not None else [],
        }
        if macs is not None:
            attrs["macs"] = macs
        if status == "complete":
            attrs["val_acc"] = acc
            t = optuna.trial.create_trial(values=[acc, macs], user_attrs=attrs)
        elif status == "infeasible":
            attrs["fail_reason"] = "over budget, not trained"
            t = optuna.trial.create_trial(values=[0.0, macs], user_attrs=attrs)
        elif status == "failed":
            attrs["fail_reason"] = "loss became NaN <b>"
            t = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs)
        elif status == "interrupted":
            attrs["fail_reason"] = "interrupted by the user"
            t = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs)
        else:
            t = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=attrs)
        t.number = number
        trials.append(t)
    return trials_frame(trials)


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return make_frame(SPEC)


FAILURE = "loss became NaN <b>"  # the error of the trial that fails: it must be escaped


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The trials of a tiny real search (synthetic data, one epoch) in its own store: complete
    trials, two over the MACs budget and one whose training raises."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('viz')}/real.db")
    real_train, calls = evaluate_module.train_proxy, []

    def train(*args: object, **kwargs: object) -> object:
        calls.append(None)
        if len(calls) == 2:
            raise RuntimeError(FAILURE)
        return real_train(*args, **kwargs)

    config = SearchConfig(
        name="viz",
        space=load_space("digits"),
        dataset="synthetic",
        trials=6,
        max_flops=250_000,
        proxy=ProxyConfig(epochs=1, train_subset=64, batch_size=64),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate_module, "train_proxy", train)
        frame = run_search(config, store)
    statuses = Counter(frame.status)
    assert statuses["failed"] == 1 and statuses["infeasible"] >= 1 and statuses["complete"] >= 3
    return frame


def _all_entries(search: dict) -> list[dict]:
    return search["points"] + search["failed"] + search["infeasible"] + search["running"]


def test_every_trial_is_exactly_one_point(real: pd.DataFrame) -> None:
    df = real
    data = pareto_figure_data({"s": df})
    (s,) = data["searches"]
    entries = _all_entries(s)
    assert len(entries) == len(df) == s["n_trials"]
    assert sorted(e["number"] for e in entries) == sorted(df.number)
    # The drawn figure has exactly one marker per trial (the front is a line, the knee a
    # marker symbol of its own point, not an extra marker).
    fig = pareto_figure(data)
    markers = [t for t in fig.data if "markers" in t.mode]
    assert sum(len(t.x) for t in markers) == len(df)
    assert sum(len(t.customdata) for t in markers) == len(df)


def test_statuses_are_drawn_apart(df: pd.DataFrame) -> None:
    data = pareto_figure_data({"s": df})
    (s,) = data["searches"]
    for status in ("failed", "infeasible", "running"):
        assert [e["number"] for e in s[status]] == list(df.number[df.status == status])
        assert all(e["val_acc"] is None for e in s[status])
    assert [p["number"] for p in s["points"]] == list(df.number[df.status == "complete"])
    for p in s["points"]:
        row = df[df.number == p["number"]].iloc[0]
        assert (p["val_acc"], p["macs"]) == (row.val_acc, row.macs)
    fig = pareto_figure(data)
    rug = {t.meta["role"]: t for t in fig.data if t.yaxis == "y2"}
    assert set(rug) == {"failed", "infeasible", "running"}
    assert list(rug["infeasible"].x) == [900_000]  # infeasible trials keep their MACs
    assert list(rug["failed"].x) == [120_000, 100_000]  # unknown MACs: the left edge
    assert fig.layout.yaxis2.domain[1] < fig.layout.yaxis.domain[0]
    main = [t for t in fig.data if t.yaxis != "y2" and t.meta["role"] == "trials"]
    assert sum(len(t.x) for t in main) == (df.status == "complete").sum()


def test_interrupted_trials_have_their_own_row_and_reason() -> None:
    df = make_frame([("complete", 0.5, 100_000), ("interrupted", None, 150_000)])
    assert list(df.status) == [TrialStatus.COMPLETE, TrialStatus.INTERRUPTED]
    (s,) = pareto_figure_data({"s": df})["searches"]
    assert s["failed"] == [] and s["counts"]["interrupted"] == 1 and s["counts"]["failed"] == 0
    (entry,) = s["interrupted"]
    assert entry["number"] == 1 and entry["status"] == "interrupted"
    assert "(interrupted)" in entry["hover"] and "interrupted by the user" in entry["hover"]
    fig = pareto_figure({"searches": [s]})
    (rug,) = [t for t in fig.data if t.yaxis == "y2"]
    assert rug.meta["role"] == "interrupted" and list(rug.customdata) == [[1]]
    assert rug.name == "s: interrupted" and list(rug.y) == ["interrupted"]
    assert fig.layout.meta["searches"][0]["counts"]["interrupted"] == 1


def test_every_status_has_its_own_strip_row() -> None:
    spec = [("complete", 0.5, 100_000), ("running", None, 120_000), ("failed", None, 130_000)]
    df = make_frame(spec)
    df.loc[df.number == 1, "status"] = "stopped"  # stopped early by successive halving
    (s,) = pareto_figure_data({"s": df})["searches"]
    assert s["running"] == [] and s["counts"]["stopped"] == 1
    assert RUG_ROWS == ("failed", "infeasible", "interrupted", "stopped", "running")
    assert [e["number"] for e in s["stopped"]] == [1] and [e["number"] for e in s["failed"]] == [2]


def test_front_equals_pareto_mask(df: pd.DataFrame) -> None:
    ok = df[df.status == "complete"]
    expected = set(ok.number[pareto_mask(list(ok.val_acc), list(ok.macs))])
    (s,) = pareto_figure_data({"s": df})["searches"]
    assert set(s["front"]) == expected == set(df.number[df.on_front]) == {0, 1, 9, 4}
    by_number = {p["number"]: p for p in s["points"]}
    front = [by_number[n] for n in s["front"]]
    assert [p["macs"] for p in front] == sorted(p["macs"] for p in front)
    assert [p["val_acc"] for p in front] == sorted(p["val_acc"] for p in front)
    assert all(p["on_front"] == (p["number"] in expected) for p in s["points"])
    (line,) = [t for t in pareto_figure({"searches": [s]}).data if t.meta["role"] == "front"]
    assert line.line.shape == "hv"
    assert list(line.x) == [p["macs"] for p in front]
    assert list(line.y) == [p["val_acc"] for p in front]


def test_knee_is_marked(df: pd.DataFrame) -> None:
    ok = df[df.status == "complete"].reset_index(drop=True)
    expected = int(ok.number[knee_index(list(ok.val_acc), list(ok.macs))])
    data = pareto_figure_data({"s": df})
    (s,) = data["searches"]
    assert s["knee"]["number"] == expected
    assert [p["number"] for p in s["points"] if p["knee"]] == [expected]
    assert expected in s["front"]
    fig = pareto_figure(data)
    (trials,) = [t for t in fig.data if t.meta["role"] == "trials"]
    symbols = zip(trials.customdata, trials.marker.symbol)
    stars = [n for (n,), symbol in symbols if symbol == "star"]
    assert stars == [expected]
    assert any(f"knee #{expected}" in a.text for a in fig.layout.annotations)


def test_front_knee_and_hypervolume_of_a_real_search(real: pd.DataFrame) -> None:
    ok = real[real.status == "complete"].reset_index(drop=True)
    acc, macs = list(ok.val_acc), list(ok.macs)
    (s,) = pareto_figure_data({"s": real})["searches"]
    assert (
        set(s["front"]) == set(ok.number[pareto_mask(acc, macs)]) == set(real.number[real.on_front])
    )
    assert s["knee"]["number"] == int(ok.number[knee_index(acc, macs)])
    assert [p["number"] for p in s["points"] if p["knee"]] == [s["knee"]["number"]]
    # Failed and over-budget trials are off the plane, in the strip, never on the front.
    off = set(real.number[real.status != "complete"])
    assert {e["number"] for e in s["failed"] + s["infeasible"]} == off
    assert not off & set(s["front"])
    hv = hypervolume_curve(real)["hypervolume"]
    assert all(b >= a for a, b in zip(hv, hv[1:])) and hv[-1] > 0
    assert hv[-1] == pytest.approx(hypervolume(acc, macs, 10 * max(macs)))


def test_hover_names_operator_kernel_heads_and_cost(real: pd.DataFrame) -> None:
    df = real
    (s,) = pareto_figure_data({"s": df})["searches"]
    for entry in _all_entries(s):
        row = df[df.number == entry["number"]].iloc[0]
        hover = entry["hover"]
        for i, stage in enumerate(row.arch["stages"]):
            assert f"stage {i}: {stage['operator']}" in hover
            if stage["kernel"] is not None:
                assert f"kernel {stage['kernel']}" in hover
            if stage["heads"] is not None:
                assert f"heads {stage['heads']}" in hover
        assert f"params {row.params:,}" in hover
        if row.status == "complete":
            assert f"MACs {int(row.macs):,}" in hover
            assert f"val acc {row.val_acc:.4f}" in hover
    (failed,) = s["failed"]
    assert "loss became NaN &lt;b&gt;" in failed["hover"]  # failure messages are escaped
    assert FAILURE not in failed["hover"]
    (infeasible, *_) = s["infeasible"]
    assert "over budget" in infeasible["hover"] and "max-flops 250,000" in infeasible["hover"]


def test_stage_lines_skip_unused_fields() -> None:
    arch = {
        "space": "x",
        "stages": [
            {"operator": "conv", "width": 8, "depth": 1, "kernel": 3, "heads": None},
            {"operator": "attention", "width": 16, "depth": 2, "heads": 2, "attention": "window"},
        ],
    }
    assert stage_lines(arch) == [
        "stage 0: conv, kernel 3, width 8",
        "stage 1: attention, heads 2, window, width 16, depth 2",
    ]
    assert stage_lines(None) == []
    lean = {
        "stages": [
            {"operator": "gated", "width": 4, "depth": 1, "kernel": 3, "attention": "channel"}
            | {"mlp_ratio": 0.0, "downsample": "conv"},
            {"operator": "skip", "width": 0, "depth": 0},
        ]
    }
    assert stage_lines(lean) == [
        "stage 0: gated, kernel 3, channel, mlp 0, width 4, down conv",
        "stage 1: skipped",
    ]


def test_overlay_gives_each_search_its_colour(df: pd.DataFrame) -> None:
    frames = {"nsga2": df, "random": make_frame(SPEC[:5], seed=1), "tpe": make_frame(SPEC, 2)}
    data = pareto_figure_data(frames)
    colors = [s["color"] for s in data["searches"]]
    assert [s["name"] for s in data["searches"]] == list(frames)
    assert len(set(colors)) == 3
    fig = pareto_figure(data)
    for s in data["searches"]:
        traces = [t for t in fig.data if t.meta["search"] == s["name"]]
        assert {t.meta["role"] for t in traces} >= {"trials", "front"}
        for t in traces:
            color = t.line.color if t.mode == "lines" else t.marker.color
            assert color == s["color"]
    # One shared hypervolume reference: 10x the largest MACs of any complete trial.
    assert data["ref_macs"] == 10 * 400_000
    assert len({search_color(i) for i in range(40)}) == 40


def test_names_are_escaped_in_the_figure(df: pd.DataFrame) -> None:
    frames = {name: df for name in XSS_NAMES}
    fig = pareto_figure(pareto_figure_data(frames), title=XSS_NAMES[0])
    text = json.dumps([t.name for t in fig.data] + [fig.layout.title.text])
    hovers = json.dumps([h for t in fig.data for h in t.hovertext or ()])
    for name in XSS_NAMES:
        assert name not in text and name not in hovers
        assert html.escape(name) in text and html.escape(name) in hovers
    assert {t.meta["search"] for t in fig.data} == set(XSS_NAMES)  # data keeps the name


def test_figures_are_plotly_figures(real: pd.DataFrame) -> None:
    df = real
    curve = list(df.curve[df.status == "complete"].iloc[0])
    figures = {
        "pareto": pareto_figure(pareto_figure_data({"a": df, "b": df})),
        "hypervolume": hypervolume_figure(hypervolume_curve(df)),
        "operators": operator_figure(operator_frequencies(df)),
        "curve": curve_figure(curve),
    }
    for key, fig in figures.items():
        assert isinstance(fig, go.Figure), key
        # What the dashboard sends is the figure's own JSON, and it reads back the same.
        assert pio.from_json(pio.to_json(fig)) == fig, key
    kinds = {key: {t.type for t in fig.data} for key, fig in figures.items()}
    assert kinds == {
        "pareto": {"scatter"},
        "hypervolume": {"scatter"},
        "operators": {"bar"},
        "curve": {"scatter"},
    }
    assert len(figures["pareto"].data) == 2 * 4  # per search: trials, front and 2 strip rows
    assert list(figures["curve"].data[0].x) == list(range(1, len(curve) + 1))
    assert list(figures["curve"].data[0].y) == curve
    assert figures["pareto"].layout.xaxis.type == "log"


def test_hypervolume_curve_never_decreases(df: pd.DataFrame) -> None:
    curve = hypervolume_curve(df)
    hv = curve["hypervolume"]
    assert curve["numbers"] == sorted(df.number)
    assert all(b >= a for a, b in zip(hv, hv[1:]))
    ok = df[df.status == "complete"]
    assert curve["ref_macs"] == 10 * ok.macs.max()
    assert hv[-1] == pytest.approx(hypervolume(list(ok.val_acc), list(ok.macs), curve["ref_macs"]))
    # Trials that add nothing to the front keep the value: #2 (dominated), #3 (failed).
    assert hv[2] == hv[1] and hv[3] == hv[2]
    assert hv[4] > hv[3]
    fixed = hypervolume_curve(df, ref_macs=1e7)
    assert fixed["ref_macs"] == 1e7 and fixed["hypervolume"][-1] > hv[-1]


@pytest.mark.parametrize("frame", ["df", "real"])
def test_operator_frequencies_sum_up(frame: str, request: pytest.FixtureRequest) -> None:
    df = request.getfixturevalue(frame)
    freq = operator_frequencies(df)
    assert freq["n_all"] == len(df)
    assert freq["n_front"] == int(df.on_front.sum())
    assert len(freq["stages"]) == 2
    assert set(freq["operators"]) >= {"conv", "attention", "parallel", "gated"}
    for i, st in enumerate(freq["stages"]):
        assert sum(st["all"].values()) == len(df)
        assert sum(st["front"].values()) == int(df.on_front.sum())
        every = Counter(a["stages"][i]["operator"] for a in df.arch)
        front = Counter(a["stages"][i]["operator"] for a in df.arch[df.on_front])
        assert {k: v for k, v in st["all"].items() if v} == dict(every)
        assert {k: v for k, v in st["front"].items() if v} == dict(front)
    fig = operator_figure(freq)
    for trace in fig.data:
        n_ops = len(freq["operators"])
        for i in range(len(freq["stages"])):
            assert sum(trace.y[i * n_ops : (i + 1) * n_ops]) == pytest.approx(1.0)


def test_operators_come_from_the_registry(df: pd.DataFrame) -> None:
    assert operator_frequencies(df)["operators"][: len(OPS)] == list(OPS)

    @register_op("toy-registered", uses=())
    class ToyBlock(nn.Module):
        pass

    try:
        freq = operator_frequencies(df)
        assert "toy-registered" in freq["operators"]  # no trial uses it yet: counted as 0
        assert all(st["all"]["toy-registered"] == 0 for st in freq["stages"])
        (bars, _) = operator_figure(freq).data
        assert "toy-registered" in bars.x[1]
    finally:
        del OPS["toy-registered"]


def test_empty_search() -> None:
    empty = make_frame([])
    data = pareto_figure_data({"empty": empty})
    (s,) = data["searches"]
    assert s["points"] == [] and s["front"] == [] and s["knee"] is None
    assert data["macs_range"] is None
    fig = pareto_figure(data)
    assert [t.meta["role"] for t in fig.data] == ["trials", "front"]
    assert all(len(t.x) == 0 for t in fig.data)
    assert "yaxis2" not in fig.to_plotly_json()["layout"]  # no strip without such trials
    assert hypervolume_curve(empty)["hypervolume"] == []
    assert operator_frequencies(empty)["stages"] == []


# --------------------------------------------------------------------------- offline report


class _Page(HTMLParser):
    """Parses a page: every element must close in order; scripts are collected."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "col", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.tags: list[str] = []
        self.csp = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "meta" and dict(attrs).get("http-equiv") == "Content-Security-Policy":
            self.csp = dict(attrs)["content"] or ""
        if tag == "script":
            self.scripts.append((dict(attrs), ""))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (self.open[-3:], tag)
        self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] == "script":
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)


def parse_page(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.open == [], parser.open  # every element closed
    return parser


def test_report_is_self_contained_and_inert(df: pd.DataFrame) -> None:
    frames = {XSS_NAMES[1]: df, "plain": df}
    record = SearchRecord(
        space_name="digits",
        space_toml="",
        dataset="digits",
        proxy={},
        strategy="tpe",
        seed=0,
        n_trials=10,
    )
    page = report_html(frames, {"plain": record}, plotly_js="/* plotly */")
    parsed = parse_page(page)
    assert parsed.tags[:2] == ["html", "head"]
    assert all("src" not in attrs for attrs, _ in parsed.scripts)  # inlined, nothing fetched
    assert "http://" not in page and "https://" not in page
    assert len(parsed.scripts) == page.count("<script") == 3  # the name adds none
    assert XSS_NAMES[1] not in page and html.escape(XSS_NAMES[1]) in page
    assert "connect-src 'none'" in parsed.csp and "default-src 'none'" in parsed.csp
    (raw,) = [text for attrs, text in parsed.scripts if attrs.get("id") == "figure-data"]
    fig = json.loads(raw)
    assert {t["meta"]["search"] for t in fig["data"]} == set(frames)
    markers = [t for t in fig["data"] if "markers" in t["mode"]]
    assert sum(len(t["x"]) for t in markers) == 2 * len(df)
    assert "<td>tpe</td>" in page


def test_report_data_has_one_row_per_search(df: pd.DataFrame) -> None:
    data = report_data({"a": df, "b": make_frame(SPEC[:3], seed=1)}, title="<two>")
    assert data["heading"] == "<two>"  # plain data; the page escapes it
    assert isinstance(data["figure"], go.Figure)
    a, b = data["rows"]
    counts = a["counts"]
    assert (a["name"], a["trials"], counts["failed"], counts["infeasible"]) == ("a", len(df), 2, 1)
    assert list(counts) == [s.value for s in TrialStatus] and sum(counts.values()) == len(df)
    assert a["hypervolume_label"].startswith(a["hypervolume"] + " (ref: acc 0, 10x max MACs")
    assert "all searches in this report" in a["hypervolume_label"]
    assert (b["name"], b["trials"], b["front"], b["strategy"]) == ("b", 3, 2, "-")
    assert a["best"] == f"{df.val_acc.max():.4f}"
    assert a["knee"].startswith("#") and "stage 0:" in a["knee"]
    assert a["color"] != b["color"]
    page = report_html({"a": df}, title="<two>", plotly_js="")
    assert "<title>&lt;two&gt;</title>" in page
