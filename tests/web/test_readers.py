"""Readers that scale: one trial by its id, cached summaries, polling for newer trials only,
a paged trial table and WebGL markers on large Pareto plots."""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import urlencode

import optuna
import pytest
import sqlalchemy

from fusion_nas.analysis.figures import WEBGL_POINTS, pareto_figure, pareto_figure_data
from fusion_nas.store import optuna_adapter
from fusion_nas.store.records import TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.web import create_app
from tests.helpers.benchmarks import load
from tests.helpers.records import add_trial, new_study

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NAME = "readers"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A store with one search: 4 complete trials, a failed one and a running one."""
    st = Store(f"sqlite:///{tmp_path / 'store.db'}")
    study = new_study(st, NAME, n_trials=6)
    for i, (acc, macs) in enumerate([(0.5, 1000), (0.7, 3000), (0.6, 5000), (0.8, 9000)]):
        add_trial(st, study, TrialStatus.COMPLETE, acc=acc, macs=macs, seed=i)
    add_trial(st, study, TrialStatus.FAILED, seed=4)
    study.ask()  # trial 5: running
    return st


def q(path: str, **params: object) -> str:
    return f"{path}?{urlencode(params)}"


class Statements:
    """SQL statements run on an engine while the block runs."""

    def __init__(self, engine: sqlalchemy.engine.Engine) -> None:
        self.engine = engine
        self.seen: list[str] = []

    def _on(self, conn, cursor, statement, *args) -> None:  # noqa: ANN001
        self.seen.append(statement)

    def __enter__(self) -> Statements:
        sqlalchemy.event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *exc: object) -> None:
        sqlalchemy.event.remove(self.engine, "before_cursor_execute", self._on)


def test_api_trial_reads_one_trial(store: Store, monkeypatch) -> None:
    def every_trial(*args, **kwargs):
        raise AssertionError("get_all_trials called to read one trial")

    client = TestClient(create_app(store))
    monkeypatch.setattr(store.storage, "get_all_trials", every_trial)
    with Statements(store.storage.engine) as sql:
        body = client.get(q("/api/trial", search=NAME, number=1)).json()
    assert body["number"] == 1 and body["status"] == "complete" and body["on_front"] is True
    # whatever the search's size, no statement asks for every trial's attributes
    assert not [s for s in sql.seen if "trial_user_attributes" in s and " IN " in s.upper()]
    assert client.get(q("/api/trial", search=NAME, number=2)).json()["on_front"] is False
    assert client.get(q("/api/trial", search=NAME, number=5)).json()["status"] == "running"
    missing = client.get(q("/api/trial", search=NAME, number=9))
    assert missing.status_code == 404 and "0..5" in missing.json()["error"]
    assert store.trial(NAME, 3)["on_front"] is True


def test_statement_count_of_one_trial_does_not_grow_with_the_search(store: Store) -> None:
    search = store.search(NAME)
    with Statements(store.storage.engine) as small:
        search.trial(1)
    study = optuna.load_study(study_name=NAME, storage=store.storage)
    for i in range(20):
        add_trial(store, study, TrialStatus.COMPLETE, acc=0.1, macs=10**6, seed=i)
    with Statements(store.storage.engine) as large:
        search.trial(1)
    assert len(large.seen) == len(small.seen)


def test_polling_returns_only_newer_and_running_trials(store: Store) -> None:
    client = TestClient(create_app(store))
    full = client.get(q("/api/search", name=NAME)).json()
    assert full["partial"] is False and [t["number"] for t in full["trials"]] == list(range(6))
    assert full["front"] == [0, 1, 3]
    unchanged = client.get(q("/api/search", name=NAME, since=full["version"], after=5))
    assert unchanged.json()["unchanged"] is True

    study = optuna.load_study(study_name=NAME, storage=store.storage)
    study.tell(5, state=optuna.trial.TrialState.FAIL)  # the running trial ends
    add_trial(store, study, TrialStatus.COMPLETE, acc=0.95, macs=20_000, seed=6)
    body = client.get(
        q("/api/search", name=NAME, since=full["version"], after=5, running="5")
    ).json()
    assert body["partial"] is True and body["total"] == 7
    assert [t["number"] for t in body["trials"]] == [5, 6]
    assert body["trials"][0]["status"] == "failed" and body["front"] == [0, 1, 3, 6]
    assert body["summary"]["trials"] == 7
    bad = client.get(q("/api/search", name=NAME, after=0, running="x"))
    assert bad.status_code == 404


def test_the_trial_table_pages(store: Store) -> None:
    client = TestClient(create_app(store))
    first = client.get(q("/api/search", name=NAME, page=0, size=4)).json()
    second = client.get(q("/api/search", name=NAME, page=1, size=4)).json()
    assert [t["number"] for t in first["trials"]] == [0, 1, 2, 3]
    assert [t["number"] for t in second["trials"]] == [4, 5]
    assert first["total"] == second["total"] == 6 and second["page"] == 1
    assert client.get(q("/api/search", name=NAME, page=0, size=0)).status_code == 404


def test_summaries_read_only_what_changed(store: Store, monkeypatch) -> None:
    (first,) = store.summaries()
    assert first["trials"] == 6 and first["running"] == 1

    def every_trial(*args, **kwargs):
        raise AssertionError("every trial read again though none changed")

    with monkeypatch.context() as m:
        m.setattr(store.storage, "get_all_trials", every_trial)
        assert store.summaries() == [first]
        study = optuna.load_study(study_name=NAME, storage=store.storage)
        study.tell(5, state=optuna.trial.TrialState.FAIL)
        add_trial(store, study, TrialStatus.COMPLETE, acc=0.99, macs=500, seed=9)
        (now,) = store.summaries()  # the new trial and the one that was running, alone
    assert now["trials"] == 7 and now["running"] == 0 and now["best_val_acc"] == 0.99
    assert now == Store(store.url).summaries()[0]  # as a fresh read finds it


def test_trial_stats_and_ids_read_optunas_tables(store: Store) -> None:
    """Pins the parts of Optuna's schema that optuna_adapter's queries use."""
    study_id = store.storage.get_study_id_from_name(NAME)
    stats = optuna_adapter.trial_stats(store.storage)
    states = {state: count for state, count, *_ in stats[study_id]}
    assert states == {"COMPLETE": 4, "FAIL": 1, "RUNNING": 1}
    assert store.n_trials(study_id) == 6
    ids = optuna_adapter.trial_ids(store.storage, study_id, 3, [1])
    expected = [
        store.storage.get_trial_id_from_study_id_trial_number(study_id, n) for n in (1, 4, 5)
    ]
    assert ids == expected
    values = optuna_adapter.complete_values(store.storage, study_id)
    assert values == {0: (0.5, 1000.0), 1: (0.7, 3000.0), 2: (0.6, 5000.0), 3: (0.8, 9000.0)}
    assert optuna_adapter.rdb_engine(optuna.storages.InMemoryStorage()) is None
    assert [r.number for r in store.records_after(study_id, 3, [1])] == [1, 4, 5]


def test_one_trials_front_flag_is_the_whole_tables(tmp_path: Path) -> None:
    """``on_front`` of one trial, asked of the database, equals the full table's for every
    trial: ties, duplicates, dominated and failed trials alike."""
    st = Store(f"sqlite:///{tmp_path / 'front.db'}")
    study = new_study(st, NAME, n_trials=9)
    points = [(0.5, 1000), (0.7, 3000), (0.7, 3000), (0.6, 5000), (0.7, 2000), (0.9, 9000)]
    points += [(0.9, 9500), (0.4, 1000)]
    for i, (acc, macs) in enumerate(points):
        add_trial(st, study, TrialStatus.COMPLETE, acc=acc, macs=macs, seed=i)
    add_trial(st, study, TrialStatus.FAILED, seed=len(points))
    table = st.search_frame(st.search(NAME)).set_index("number").on_front
    flags = {n: st.trial(NAME, n)["on_front"] for n in range(len(points) + 1)}
    assert flags == {n: bool(table[n]) for n in flags}
    assert [n for n, on in flags.items() if on] == [0, 4, 5]


def test_pareto_markers_use_webgl_above_the_threshold(tmp_path: Path) -> None:
    readers = load("readers")
    st = Store(f"sqlite:///{tmp_path / 'big.db'}")
    readers.fill_search(st, "big", WEBGL_POINTS + 300, running=1)
    readers.fill_search(st, "small", 50)
    for name, kind in (("big", "scattergl"), ("small", "scatter")):
        df = st.search_frame(st.search(name))
        fig = pareto_figure(pareto_figure_data({name: df}))
        (trials,) = [t for t in fig.data if t.meta["role"] == "trials"]
        assert trials.type == kind
        assert all(t.type == "scatter" for t in fig.data if t.meta["role"] == "front")
    assert len(st.search_frame(st.search("big"))) == WEBGL_POINTS + 301
