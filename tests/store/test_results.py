"""The query layer and the store behind it: lookups, picks, summaries, storage calls, names."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter

import optuna
import pandas as pd
import pytest

from fusion_nas.errors import FusionNasError, StoreError
from fusion_nas.pareto import hypervolume
from fusion_nas.store import optuna_adapter
from fusion_nas.store.queries import (
    SUMMARY_COLUMNS,
    TRIAL_COLUMNS,
    download_filename,
    pick_trial,
    reference_macs,
    safe_filename,
    search_summary,
    trial_row,
    trials_frame,
)
from fusion_nas.store.records import SearchRecord, TrialRecord, TrialStatus
from fusion_nas.store.store import Store, quiet_optuna
from tests.helpers.records import add_trial, new_study

OK, BAD, OVER, CUT, RUN = (
    TrialStatus.COMPLETE,
    TrialStatus.FAILED,
    TrialStatus.INFEASIBLE,
    TrialStatus.INTERRUPTED,
    TrialStatus.RUNNING,
)


@pytest.fixture()
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path}/store.db")


def fill(store: Store, name: str, spec: list[tuple[TrialStatus, float, int]]) -> None:
    study = new_study(store, name)
    for seed, (status, acc, macs) in enumerate(spec):
        add_trial(store, study, status, acc=acc, macs=macs, seed=seed)


# --------------------------------------------------------------------------- a real search


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Store, pd.DataFrame]:
    from fusion_nas.model.space import load_space
    from fusion_nas.search.config import SearchConfig
    from fusion_nas.search.session import run_search
    from fusion_nas.training.loop import ProxyConfig

    store = Store(f"sqlite:///{tmp_path_factory.mktemp('real')}/store.db")
    config = SearchConfig(
        name="real",
        space=load_space("digits"),
        dataset="synthetic",
        strategy="optuna:random",
        trials=3,
        proxy=ProxyConfig(epochs=1),
    )
    run_search(config, store)
    return store, store.trials("real")


def test_a_real_search_reads_back_through_the_query_layer(searched) -> None:
    store, df = searched
    assert list(df.columns) == list(TRIAL_COLUMNS)
    assert list(df.number) == [0, 1, 2] and set(df.status) == {"complete"}
    record = store.search_record("real")
    assert isinstance(record, SearchRecord)
    assert record.dataset == "synthetic" and record.space_name == "digits"
    assert record.n_trials == 3 and record.proxy["epochs"] == 1
    recs = store.records("real")
    assert [r.number for r in recs] == [0, 1, 2]
    assert all(isinstance(r, TrialRecord) and r.status is OK for r in recs)
    row = store.trial("real", 1)
    assert row == trial_row(df, 1) and row["arch"]["space"] == "digits"
    best = pick_trial(df, pick="best")
    assert best["val_acc"] == df.val_acc.max()
    assert pick_trial(df, pick="knee")["on_front"]
    summary = search_summary("real", record, df)
    assert summary["done"] == 3 and summary["status"] == "done" and summary["trials"] == 3
    assert summary["front_size"] == int(df.on_front.sum()) >= 1
    with pytest.raises(
        StoreError, match=r"trial 7 does not exist in search 'real'; trials: 0\.\.2"
    ):
        store.trial("real", 7)


# --------------------------------------------------------------------------- lookups


def test_lookup_errors_name_the_valid_range_or_the_known_searches(store: Store) -> None:
    fill(store, "a", [(OK, 0.5, 100), (BAD, 0.0, 200)])
    fill(store, "b", [])
    df = store.trials("a")
    with pytest.raises(StoreError, match=r"^trial 5 does not exist; trials: 0\.\.1$"):
        trial_row(df, 5)
    with pytest.raises(StoreError, match=r"trial 0 does not exist in search 'b'; trials: none yet"):
        store.trial("b", 0)
    with pytest.raises(StoreError, match=r"trial 9 does not exist in search 'a'; trials: 0\.\.1"):
        pick_trial(df, trial=9, search="a")
    for call in (store.trials, store.search, store.search_record, store.load_study, store.records):
        with pytest.raises(StoreError, match=r"no search named 'zz' .*known searches: 'a', 'b'"):
            call("zz")
    with pytest.raises(StoreError, match="the store has no searches"):
        Store(store.url.replace("store.db", "empty.db")).trials("zz")
    optuna.create_study(study_name="foreign", storage=store.storage)
    with pytest.raises(StoreError, match="no search named 'foreign'"):
        store.load_study("foreign")


def test_pick_rules_and_their_errors(store: Store) -> None:
    fill(
        store,
        "p",
        [(OK, 0.5, 100), (OK, 0.8, 1000), (OK, 0.8, 900), (OK, 0.9, 50_000), (OVER, 0, 10)],
    )
    df = store.trials("p")
    assert pick_trial(df, pick="best")["number"] == 3
    assert pick_trial(df, pick="max-flops:1000")["number"] == 2  # tie on accuracy: fewer MACs
    assert pick_trial(df, trial=4)["status"] == "infeasible"
    assert pick_trial(df, pick="knee")["number"] in {0, 2, 3}
    with pytest.raises(FusionNasError, match="give exactly one of --trial N or --pick"):
        pick_trial(df)
    with pytest.raises(FusionNasError, match="give exactly one of"):
        pick_trial(df, trial=0, pick="best")
    with pytest.raises(FusionNasError, match=r"unknown pick 'worst'; allowed: 'knee', 'best'"):
        pick_trial(df, pick="worst")
    with pytest.raises(FusionNasError, match="needs a number, got 'lots'"):
        pick_trial(df, pick="max-flops:lots")
    with pytest.raises(StoreError, match="at most 10 MACs; the cheapest has 100"):
        pick_trial(df, pick="max-flops:10")
    with pytest.raises(StoreError, match="no complete trial to pick from"):
        pick_trial(df[df.status != "complete"], pick="best")


# --------------------------------------------------------------------------- summaries


def test_summary_counts_every_status_and_shares_one_reference(store: Store) -> None:
    fill(
        store, "small", [(OK, 0.6, 100), (OK, 0.7, 1000), (BAD, 0, 10), (CUT, 0, 20), (RUN, 0, 30)]
    )
    fill(store, "large", [(OK, 0.9, 50_000), (OVER, 0, 10**9), (CUT, 0, 40)])
    summary = store.summary()
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    rows = summary.set_index("name")
    assert list(rows.index) == ["small", "large"]
    small, large = rows.loc["small"], rows.loc["large"]
    assert (small.done, small.failed, small.infeasible) == (3, 1, 0)
    assert (small.interrupted, small.running) == (1, 1)
    assert (large.done, large.infeasible, large.interrupted, large.running) == (2, 1, 1, 0)
    assert small.front_size == 2 and large.front_size == 1 and large.best_val_acc == 0.9
    # One reference for both rows: 10x the largest MACs of any complete trial (not infeasible).
    ref = 10 * 50_000
    assert reference_macs([store.trials("small"), store.trials("large")]) == ref
    assert small.hypervolume == pytest.approx(hypervolume([0.6, 0.7], [100, 1000], ref))
    assert large.hypervolume == pytest.approx(hypervolume([0.9], [50_000], ref))
    assert large.hypervolume > 0 and small.hypervolume > 0
    explicit = store.summary(ref_macs=1e6).set_index("name")
    assert explicit.loc["small"].hypervolume == pytest.approx(
        hypervolume([0.6, 0.7], [100, 1000], 1e6)
    )
    # Alone, a search uses its own reference; the full summary says where it stands.
    alone = search_summary("small", store.search_record("small"), store.trials("small"))
    assert alone["ref_macs"] == 10_000 and alone["status"] == "running"
    assert alone["requested"] == 5 and alone["epochs"] == 1 and alone["trials"] == 5


TINY_SPACE = """
name = "tiny"
[input]
kind = "image"
size = [8, 8]
channels = 1
classes = 10
[stem]
width = 4
[[stage]]
operator = ["conv", "attention"]
kernel = [3, 5]
heads = [1, 2]
attention = ["global", "linear"]
width = 4
"""


def hand_hypervolume(points: list[tuple[float, float]], ref_macs: float) -> float:
    """The area in (accuracy, log10 MACs) that the points dominate up to (0, ref_macs).

    Written as an integral over log10 MACs of the best accuracy reachable within that many
    MACs, so it shares nothing with the front walk of :func:`fusion_nas.pareto.hypervolume`.
    """
    by_macs = sorted(points, key=lambda p: p[1])
    edges = [m for _, m in by_macs] + [ref_macs]
    area, best = 0.0, 0.0
    for (acc, macs), upper in zip(by_macs, edges[1:]):
        best = max(best, acc)
        area += best * (math.log10(upper) - math.log10(macs))
    return area


def test_results_compares_searches_on_one_reference_point(tmp_path) -> None:
    from typer.testing import CliRunner

    from fusion_nas.cli.app import app

    runner = CliRunner()
    url = f"sqlite:///{tmp_path}/store.db"
    space = tmp_path / "tiny.toml"
    space.write_text(TINY_SPACE)
    for name, space_arg in (("small", str(space)), ("large", "digits")):
        res = runner.invoke(
            app,
            ["search", space_arg, "--dataset", "synthetic", "--trials", "3", "--epochs", "1",
             "--strategy", "optuna:random", "--name", name, "--store", url],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    listing = runner.invoke(app, ["results", "--store", url, "--format", "json"])
    assert listing.exit_code == 0, listing.output
    rows = {row["name"]: row for row in json.loads(listing.output)}
    store = Store(url)
    points = {
        name: [(r.val_acc, r.macs) for r in store.records(name) if r.status is OK]
        for name in ("small", "large")
    }
    assert all(len(p) == 3 for p in points.values())
    largest = max(m for p in points.values() for _, m in p)
    assert max(m for _, m in points["small"]) * 5 < largest, "the spaces must differ in size"
    shared = 10 * largest  # accuracy 0, MACs 10x the largest of all searches listed
    for name, pts in points.items():
        assert rows[name]["hypervolume"] == pytest.approx(hand_hypervolume(pts, shared), rel=1e-9)
    # alone, the small search's own reference would give another number: the listing did not
    # use it
    own = hand_hypervolume(points["small"], 10 * max(m for _, m in points["small"]))
    assert rows["small"]["hypervolume"] > own + 0.1
    # one search listed alone is measured on its own reference
    alone = search_summary("small", store.search_record("small"), store.trials("small"))
    assert alone["hypervolume"] == pytest.approx(own, rel=1e-9)


def test_reference_macs_takes_frames_tables_or_values() -> None:
    assert reference_macs([]) == 1.0 and reference_macs([3, None, 7]) == 70.0
    df = trials_frame([TrialRecord(0, OK, 0.5, 40), TrialRecord(1, OVER, None, 900)])
    assert reference_macs(df) == 400.0 and reference_macs({"x": df}) == 400.0
    assert trials_frame([]).empty and list(trials_frame([]).columns) == list(TRIAL_COLUMNS)


def test_an_empty_store_has_an_empty_summary(store: Store) -> None:
    summary = store.summary()
    assert summary.empty and list(summary.columns) == list(SUMMARY_COLUMNS)


# --------------------------------------------------------------------------- storage calls


def count_calls(store: Store, monkeypatch) -> Counter:
    calls: Counter = Counter()
    for method in (
        "get_all_studies",
        "get_all_trials",
        "get_study_id_from_name",
        "get_study_user_attrs",
    ):
        original = getattr(store.storage, method)

        def counted(*args, _original=original, _method=method, **kw):
            calls[_method] += 1
            return _original(*args, **kw)

        monkeypatch.setattr(store.storage, method, counted)
    original_read = optuna_adapter.read_trials

    def read(*args, **kw):  # the store's bulk reader: a full read unless user_keys narrow it
        calls["read_trials" if kw.get("user_keys") is None else "read_narrow"] += 1
        return original_read(*args, **kw)

    monkeypatch.setattr(optuna_adapter, "read_trials", read)
    return calls


def test_listing_searches_costs_one_query_reading_one_costs_a_few(store: Store, monkeypatch):
    for i in range(5):
        fill(store, f"s{i}", [(OK, 0.5 + i / 10, 100 * (i + 1)), (BAD, 0, 1)])
    calls = count_calls(store, monkeypatch)
    summary = store.summary()
    assert len(summary) == 5
    # a summary reads only its attributes of each search's trials, never every attribute
    assert calls["get_all_studies"] == 1 and calls["read_narrow"] == 5
    assert calls["get_all_trials"] == calls["read_trials"] == 0
    assert sum(calls.values()) <= 1 + 2 * 5  # plus one id lookup per search
    calls.clear()
    store.trials("s3")
    assert calls["get_all_studies"] == calls["get_all_trials"] == 0
    assert calls["read_trials"] == 1
    assert sum(calls.values()) <= 3
    calls.clear()
    assert store.has_search("s4") and store.search_record("s0").n_trials == 5
    assert calls["get_all_studies"] == 0 and calls["get_all_trials"] == 0
    calls.clear()
    assert store.search_names() == [f"s{i}" for i in range(5)]
    assert dict(calls) == {"get_all_studies": 1}


def test_a_search_deleted_while_listed_is_left_out(store: Store, monkeypatch) -> None:
    fill(store, "keep", [(OK, 0.5, 100)])
    fill(store, "gone", [(OK, 0.5, 100)])
    listed = store.searches()
    store.delete_search("gone")
    monkeypatch.setattr(store, "searches", lambda: listed)
    assert list(store.summary().name) == ["keep"]
    assert not store.has_search("gone")


# --------------------------------------------------------------------------- side effects


def test_importing_the_store_leaves_optunas_verbosity_alone() -> None:
    code = (
        "import optuna\n"
        "optuna.logging.set_verbosity(optuna.logging.DEBUG)\n"
        "import fusion_nas.store.store, fusion_nas.store.queries, fusion_nas.store.records\n"
        "print(optuna.logging.get_verbosity())\n"
        "fusion_nas.store.store.quiet_optuna()\n"
        "print(optuna.logging.get_verbosity())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert out == [str(optuna.logging.DEBUG), str(optuna.logging.WARNING)]
    assert callable(quiet_optuna)


# --------------------------------------------------------------------------- text


def test_safe_filename_and_download_names() -> None:
    assert safe_filename("../etc/passwd") == "etc_passwd"
    assert safe_filename("my search: v2") == "my_search_v2"
    assert safe_filename("---") == "search" and safe_filename("", fallback="x") == "x"
    assert len(safe_filename("a" * 500)) == 80 and len(safe_filename("a" * 500, limit=None)) == 500
    assert safe_filename("é ü ñ") == "search"
    assert download_filename("a/b c", 3, ".py") == "fusion_a_b_c_3.py"


# --------------------------------------------------------------------------- narrow reads


def test_a_summary_read_narrow_is_the_summary_of_the_whole_table(store: Store) -> None:
    statuses = [OK, BAD, OVER, CUT, RUN, TrialStatus.STOPPED, OK, OK]
    fill(store, "all", [(s, 0.4 + i / 20, 100 * (i + 3)) for i, s in enumerate(statuses)])
    # a hand-edited complete trial without its accuracy: listed as the whole record reads it
    study = store.load_study("all")
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE,
        values=[0.9, 50.0],
        user_attrs={"macs": 50, "curve": "not a list"},
    )
    study.add_trial(trial)
    (narrow,) = store.summaries()
    record = store.search_record("all")
    whole = search_summary("all", record, store.trials("all"), narrow["ref_macs"])
    assert narrow == whole
    assert narrow["failed"] == 2 and narrow["complete"] == 3  # the edited trial: failed
    assert narrow["interrupted"] == narrow["infeasible"] == narrow["stopped"] == 1


def test_bulk_reads_return_what_optuna_returns(store: Store) -> None:
    fill(store, "s", [(OK, 0.5, 100), (BAD, 0, 1), (CUT, 0, 1), (RUN, 0, 1), (OVER, 0, 7)])
    study_id = store.storage.get_study_id_from_name("s")
    ours = optuna_adapter.read_trials(store.storage, study_id)
    theirs = store.storage.get_all_trials(study_id)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        for field in ("number", "state", "values", "datetime_start", "datetime_complete"):
            assert getattr(a, field) == getattr(b, field), field
        assert (a.user_attrs, a.system_attrs, a._trial_id) == (
            b.user_attrs,
            b.system_attrs,
            b._trial_id,
        )
    newer = optuna_adapter.read_trials(store.storage, study_id, after=2, numbers=[0])
    assert [t.number for t in newer] == [0, 3, 4]
    narrow = optuna_adapter.read_trials(
        store.storage, study_id, user_keys=["status"], system_attrs=False
    )
    assert all(set(t.user_attrs) <= {"status"} and not t.system_attrs for t in narrow)
