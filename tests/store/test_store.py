"""Where the store lives (FUSION_NAS_HOME, FUSION_NAS_STORE, ./results) and who can open it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.model.space import load_space
from fusion_nas.settings import HOME_ENV, STORE_ENV
from fusion_nas.store.store import Store

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def tiny_search(name: str, *extra: str):
    """A one-trial CLI search on synthetic data, with no --store: the default applies."""
    return cli("search", "digits", "--dataset", "synthetic", "--trials", "1", "--epochs", "1",
               "--strategy", "optuna:random", "--name", name, *extra)  # fmt: skip


def found_by_the_other_commands(name: str) -> None:
    """``results`` lists ``name`` and shows its trial; neither is given a --store."""
    listing = cli("results", "--format", "csv")
    assert listing.exit_code == 0, listing.output
    assert [line.split(",")[0] for line in listing.output.splitlines()[1:]] == [name]
    rows = json.loads(cli("results", name, "--format", "json").output)
    assert [r["number"] for r in rows] == [0] and rows[0]["status"] == "complete"


@pytest.fixture()
def where(tmp_path: Path, monkeypatch) -> Path:
    """A fresh working directory with neither variable set."""
    monkeypatch.delenv(HOME_ENV, raising=False)
    monkeypatch.delenv(STORE_ENV, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_default_store_is_results_under_the_working_directory(where: Path, monkeypatch) -> None:
    res = tiny_search("here")
    assert res.exit_code == 0, res.output
    assert files_under(where) == ["results/fusion_nas.db"]
    assert "Store: sqlite:///results/fusion_nas.db" in res.output
    found_by_the_other_commands("here")
    assert cli("pareto", "here").exit_code == 0
    assert (where / "results" / "pareto-here.html").is_file()
    # relative to the working directory: elsewhere there is no store
    other = where.parent / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    res = cli("results")
    assert res.exit_code == 2
    assert "no results store at 'results/fusion_nas.db'" in res.stderr
    assert files_under(other) == []  # looking did not create one


def test_fusion_nas_home_holds_the_store_and_the_reports(where: Path, monkeypatch) -> None:
    home = where.parent / "home"
    monkeypatch.setenv(HOME_ENV, str(home))
    res = tiny_search("homed")
    assert res.exit_code == 0, res.output
    assert files_under(home) == ["fusion_nas.db"] and files_under(where) == []
    assert f"Store: sqlite:///{home}/fusion_nas.db" in res.output
    found_by_the_other_commands("homed")
    assert cli("pareto", "homed").exit_code == 0
    assert files_under(home) == ["fusion_nas.db", "pareto-homed.html"]


def test_fusion_nas_store_overrides_only_the_store_url(where: Path, monkeypatch) -> None:
    home, elsewhere = where.parent / "home", where.parent / "elsewhere"
    url = f"sqlite:///{elsewhere}/mine.db"
    monkeypatch.setenv(HOME_ENV, str(home))
    monkeypatch.setenv(STORE_ENV, url)
    res = tiny_search("env")
    assert res.exit_code == 0, res.output
    assert files_under(elsewhere) == ["mine.db"] and not home.exists() and files_under(where) == []
    assert f"Store: {url}" in res.output
    found_by_the_other_commands("env")
    assert Store().url == url
    # reports still go under FUSION_NAS_HOME
    assert cli("pareto", "env").exit_code == 0
    assert files_under(home) == ["pareto-env.html"]
    # --store beats the variable
    res = cli("results", "--store", f"sqlite:///{where}/none.db")
    assert res.exit_code == 2 and f"no results store at '{where}/none.db'" in res.stderr


# --------------------------------------------------------------------------- optuna-dashboard


@pytest.fixture(scope="module")
def dashboard_store(tmp_path_factory) -> tuple[str, pd.DataFrame]:
    """A real search with complete and over-budget trials; its URL and its trials."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dash')}/store.db"
    # seed 3 of random search: 6,674 / 5,538 / 8,370 params, so one trial is over budget
    res = cli("search", "digits", "--dataset", "synthetic", "--trials", "3", "--epochs", "1",
              "--strategy", "optuna:random", "--seed", "3", "--max-params", "8000",
              "--name", "dash", "--store", url)  # fmt: skip
    assert res.exit_code == 0, res.output
    df = Store(url).trials("dash")
    assert set(df.status) == {"complete", "infeasible"}, "the test needs both kinds"
    return url, df


def test_optuna_load_study_reads_a_search(dashboard_store) -> None:
    url, df = dashboard_store
    assert optuna.get_all_study_names(url) == ["dash"]
    study = optuna.load_study(study_name="dash", storage=url)
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    rows = df.set_index("number")
    assert [t.number for t in study.trials] == list(rows.index)
    for t in study.trials:
        row = rows.loc[t.number]
        assert t.state == TrialState.COMPLETE
        if row.status == "complete":
            assert t.values == [row.val_acc, row.macs]
            assert t.constraints["params_over_budget"] <= 0
        else:  # over budget: accuracy 0, never trained, infeasible for Optuna's samplers
            assert t.values == [0.0, row.macs]
            assert t.constraints["params_over_budget"] == row.params - 8000 > 0
    # Optuna's own Pareto front (feasible trials only) is the one fusion-nas marks
    assert sorted(t.number for t in study.best_trials) == sorted(rows.index[rows.on_front])


def _dashboard(url: str) -> httpx.Client:
    """optuna-dashboard's own WSGI app over ``url`` (its loader opens the storage)."""
    import optuna_dashboard

    return httpx.Client(
        transport=httpx.WSGITransport(app=optuna_dashboard.wsgi(url)), base_url="http://dash"
    )


def test_optuna_dashboard_opens_the_store_as_is(dashboard_store) -> None:
    url, df = dashboard_store
    with _dashboard(url) as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        listing = client.get("/api/studies")
        assert listing.status_code == 200
        (summary,) = listing.json()["study_summaries"]
        assert summary["study_name"] == "dash"
        assert summary["directions"] == ["maximize", "minimize"]
        detail = client.get(f"/api/studies/{summary['study_id']}")
        assert detail.status_code == 200
        study = detail.json()
    assert study["name"] == "dash"
    rows = df.set_index("number")
    trials = {t["number"]: t for t in study["trials"]}
    assert sorted(trials) == list(rows.index)
    for number, t in trials.items():
        row = rows.loc[number]
        assert t["state"] == "Complete"
        values = [float(v) for v in t["values"]]
        want = [row.val_acc, row.macs] if row.status == "complete" else [0.0, row.macs]
        assert values == pytest.approx(want)
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert row.arch_desc in attrs.values()  # the architecture shows in the trial's attrs
        assert {p["name"] for p in t["params"]} >= {"s0_operator", "s1_operator"}
    # the over-budget trial (accuracy 0, most MACs) is dominated, so both fronts agree
    assert sorted(t["number"] for t in study["best_trials"]) == sorted(rows.index[rows.on_front])
    # the search record shows as a study attribute (optuna-dashboard cuts long values)
    (record,) = [a["value"] for a in study["user_attrs"] if a["key"] == "fusion_nas"]
    assert record.startswith('{"space_name": "digits", "space_toml": ')


def test_an_in_memory_store_runs_lists_and_resumes_a_search() -> None:
    from fusion_nas.search.config import SearchConfig
    from fusion_nas.search.session import run_search
    from fusion_nas.training.loop import ProxyConfig

    store = Store.in_memory()
    config = SearchConfig(
        name="mem",
        space=load_space("digits"),
        dataset="synthetic",
        trials=2,
        proxy=ProxyConfig(epochs=1, train_subset=64),
    )
    assert len(run_search(config, store)) == 2
    assert store.search_names() == ["mem"] and len(store.search("mem").trials()) == 2
    more = run_search(dataclasses.replace(config, trials=3), store)  # resumes in memory
    assert more.number.tolist() == [0, 1, 2] and store.url == "memory://"
