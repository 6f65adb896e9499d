"""Successive halving: the promotion order, the rung decisions of a search, resume and workers."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.model.space import parse_space
from fusion_nas.pareto import crowding_distances, nondominated_ranks, promotion_order
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.fidelity import (
    FidelityError,
    RungPoint,
    SuccessiveHalving,
    decide,
    default_rungs,
    parse_fidelity,
)
from fusion_nas.search.session import open_search, prepare, run_trials
from fusion_nas.store.records import TrialRecord, TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from tests.helpers.spaces import TINY
from tests.helpers.table import plant_curves

runner = CliRunner()


# ----------------------------------------------------------------------------- the order


def test_promotion_order_is_nondominated_rank_then_crowding() -> None:
    """A hand-made rung: three fronts; within a front the extremes, then the loneliest."""
    # (accuracy, MACs). Front 0: a, b, c, e, d (cheaper is worse); front 1: h, f; front 2: g.
    points = {
        "a": (0.90, 1000.0),
        "b": (0.60, 100.0),
        "c": (0.59, 98.0),  # crowded between b and e
        "e": (0.58, 96.0),
        "d": (0.30, 10.0),
        "h": (0.85, 1000.0),  # dominated by a only
        "f": (0.25, 10.0),  # dominated by d only
        "g": (0.20, 1000.0),  # dominated by f
    }
    names = list(points)
    acc = [points[n][0] for n in names]
    macs = [points[n][1] for n in names]
    assert nondominated_ranks(acc, macs) == [0, 0, 0, 0, 0, 1, 1, 2]
    crowd = dict(zip(names, crowding_distances(acc[:5], macs[:5]), strict=False))
    assert math.isinf(crowd["a"]) and math.isinf(crowd["d"])  # the two extremes of front 0
    assert crowd["b"] > crowd["e"] > crowd["c"]  # c sits closest to its neighbours
    order = [names[i] for i in promotion_order(acc, macs)]
    assert order == ["a", "d", "b", "e", "c", "h", "f", "g"]


def test_promotion_order_ties_keep_the_earlier_point() -> None:
    assert promotion_order([0.5, 0.5], [10.0, 10.0]) == [0, 1]
    assert promotion_order([], []) == []


@pytest.mark.parametrize(("n", "keep"), [(1, 1), (2, 1), (3, 1), (4, 2), (9, 3), (10, 4)])
def test_keep_is_ceil_n_over_eta(n: int, keep: int) -> None:
    assert SuccessiveHalving((1, 3, 9), eta=3).keep(n) == keep


def test_decide_promotes_the_head_of_the_order() -> None:
    sh = SuccessiveHalving((1, 3), eta=3)
    pts = [RungPoint(i, acc, macs) for i, (acc, macs) in enumerate(
        [(0.9, 1000.0), (0.3, 500.0), (0.2, 800.0), (0.5, 10.0), (0.1, 900.0), (0.25, 600.0)]
    )]  # fmt: skip
    # Front: #0 (most accurate) and #3 (cheapest); keep ceil(6/3) = 2 of 6.
    assert [decide(pts, i, sh).promote for i in range(6)] == [
        True, False, False, True, False, False,
    ]  # fmt: skip
    d = decide(pts, 1, sh)
    assert (d.position, d.of, d.keep) == (3, 6, 2)
    assert "place 3 of 6" in d.note(1, 3) and "first 2 go on" in d.note(1, 3)


def test_parse_fidelity_forms() -> None:
    assert parse_fidelity("full", 10) is None and parse_fidelity(None, 10) is None
    assert parse_fidelity("sh", 10) == SuccessiveHalving((1, 3, 10), 3)
    assert parse_fidelity("sh/2", 8) == SuccessiveHalving((1, 2, 4, 8), 2)
    assert parse_fidelity("sh:2,5,10", 10) == SuccessiveHalving((2, 5, 10), 3)
    assert str(parse_fidelity("sh:2,10/4", 10)) == "sh:2,10/4"
    assert default_rungs(27) == (1, 3, 9, 27) and default_rungs(1) == (1,)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "unknown --fidelity 'fast'; allowed: full, sh"),
        ("sh:1,3,9", "the last rung (9 epochs) must be the proxy's --epochs (10)"),
        ("sh:3,1,10", "rungs must increase"),
        ("sh:10", "has one rung"),
        ("sh/1", "eta >= 2"),
    ],
)
def test_bad_fidelity_is_one_line(value: str, message: str) -> None:
    with pytest.raises(FidelityError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_fidelity(value, 10)


# ----------------------------------------------------------------------------- on a table


def table_search(table: Path, trials: int, fidelity: str, strategy: str = "optuna:random"):
    config = SearchConfig(
        name="sh",
        space=parse_space(TINY),
        dataset="synthetic",
        strategy=strategy,
        trials=trials,
        proxy=ProxyConfig(epochs=3),
        evaluator=f"table:{table}",
        fidelity=fidelity,
    )
    strategy_ = prepare(config)
    study, _ = open_search(Store.in_memory(), config, strategy_)  # in memory: nothing on disk
    run_trials(config, study, strategy_, trials)
    return [TrialRecord.from_trial(t) for t in study.get_trials()]


def test_search_stops_exactly_the_networks_the_order_rejects(tmp_path: Path) -> None:
    """Replays every rung decision of a table search from the stored rung results."""
    curves = plant_curves(tmp_path / "t.csv")
    trials = table_search(tmp_path / "t.csv", 12, "sh:1,3/2")
    sh = SuccessiveHalving((1, 3), eta=2)
    assert len(trials) == 12
    fresh = [t for t in trials if t.duplicate_of is None]
    assert {t.status for t in fresh} == {TrialStatus.COMPLETE, TrialStatus.STOPPED}
    for k, t in enumerate(fresh):
        assert t.rungs[0] == (1, curves[t.arch_id][0])  # the table's epoch-1 accuracy
        # The rung as it stood when t arrived: every earlier network's epoch-1 result, and t's.
        points = [RungPoint(u.number, u.rungs[0][1], float(u.macs)) for u in fresh[: k + 1]]
        promote = decide(points, t.number, sh).promote
        if promote:
            assert t.status == TrialStatus.COMPLETE
            assert t.rungs == [(1, curves[t.arch_id][0]), (3, curves[t.arch_id][2])]
            assert t.val_acc == curves[t.arch_id][2] and t.curve == curves[t.arch_id]
        else:
            assert t.status == TrialStatus.STOPPED and t.val_acc is None
            assert t.curve == curves[t.arch_id][:1] and "stopped after 1 of 3 epochs" in (
                t.fail_reason or ""
            )
            assert t.train_seconds == pytest.approx(1.0)  # 1 of the table's 3 s
    assert any(t.status == TrialStatus.STOPPED for t in fresh)
    for t in trials:  # a repeat copies the first result, stopped or complete
        if t.duplicate_of is not None:
            first = next(u for u in trials if u.number == t.duplicate_of)
            assert (t.status, t.rungs) == (first.status, first.rungs)


def test_stopped_trials_are_pruned_and_count_towards_the_total(tmp_path: Path) -> None:
    plant_curves(tmp_path / "t.csv")
    url = f"sqlite:///{tmp_path}/s.db"
    args = [
        "search", str(tmp_path / "tiny.toml"), "--dataset", "synthetic", "--epochs", "3",
        "--evaluator", f"table:{tmp_path / 't.csv'}", "--store", url, "--name", "s",
        "--strategy", "optuna:random",
    ]  # fmt: skip
    (tmp_path / "tiny.toml").write_text(TINY, encoding="utf-8")
    first = runner.invoke(app, [*args, "--trials", "6", "--fidelity", "sh:1,3/3"])
    assert first.exit_code == 0, first.output
    assert "stopped early" in first.output
    again = runner.invoke(app, [*args, "--trials", "10", "--fidelity", "sh:1,3/3"])
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="s", storage=url)
    states = [t.state for t in study.get_trials()]
    assert len(states) == 10 and optuna.trial.TrialState.PRUNED in states
    assert Store(url).search_record("s").fidelity == "sh:1,3/3"
    listing = runner.invoke(app, ["results", "s", "--store", url])
    assert "stopped" in listing.output and "stopped after 1 of 3 epochs" in listing.output
    # The dashboard lists the stopped trials with where they stopped.
    from starlette.testclient import TestClient

    from fusion_nas.web import create_app

    client = TestClient(create_app(Store(url)), raise_server_exceptions=False)
    data = client.get("/api/search", params={"name": "s"}).json()
    stopped = [t for t in data["trials"] if t["status"] == "stopped"]
    assert stopped and all(
        ("stopped after 1 of 3 epochs" in t["note"]) or t["note"].startswith("same network as")
        for t in stopped
    )
    assert any("stopped after 1 of 3 epochs" in t["note"] for t in stopped)
    first = stopped[0]["number"]
    trial = client.get("/api/trial", params={"search": "s", "number": first})
    page = client.get("/trial", params={"search": "s", "number": first})
    assert trial.status_code == 200 and page.status_code == 200
    assert trial.json()["curve"] == [pytest.approx(v) for v in trial.json()["curve"]]
    other = runner.invoke(app, [*args, "--trials", "12"])
    assert other.exit_code == 2 and "different fidelity" in other.output
    assert len(optuna.load_study(study_name="s", storage=url).get_trials()) == 10


# ----------------------------------------------------------------------------- live


DIGITS = """
name = "dig-sh"
[input]
kind = "image"
size = [8, 8]
channels = 1
classes = 10
[network]
mlp_ratio = 0
[stem]
width = 4
kernel = 3
[[stage]]
operator = ["conv", "parallel"]
kernel = [3]
heads = [1]
attention = ["channel"]
width = [4, 8]
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_promoted_network_trains_on_to_the_full_runs_curve(tmp_path: Path, workers: int) -> None:
    """Stop-and-go training across rungs (in worker processes too) gives the full curve."""
    (tmp_path / "d.toml").write_text(DIGITS, encoding="utf-8")
    url = f"sqlite:///{tmp_path}/s.db"
    common = [
        "search", str(tmp_path / "d.toml"), "--dataset", "digits", "--epochs", "3",
        "--train-subset", "300", "--strategy", "optuna:grid", "--trials", "4", "--store", url,
        "--workers", str(workers),
    ]  # fmt: skip
    full = runner.invoke(app, [*common, "--name", "full"])
    sh = runner.invoke(app, [*common, "--name", "sh", "--fidelity", "sh:1,3/2"])
    assert full.exit_code == 0 and sh.exit_code == 0, full.output + sh.output
    store = Store(url)
    by_arch = {r.arch_id: r for r in store.records("full")}
    halved = store.records("sh")
    done = [t for t in halved if t.status == TrialStatus.COMPLETE and t.duplicate_of is None]
    stopped = [t for t in halved if t.status == TrialStatus.STOPPED]
    assert {t.status for t in halved} <= {TrialStatus.COMPLETE, TrialStatus.STOPPED}, halved
    assert done and (stopped or workers > 1)  # with 2 workers the arrival order decides
    for t in done:
        assert t.curve == by_arch[t.arch_id].curve and t.val_acc == by_arch[t.arch_id].val_acc
        assert [e for e, _ in t.rungs] == [1, 3]
    for t in stopped:
        assert t.curve == by_arch[t.arch_id].curve[:1]
