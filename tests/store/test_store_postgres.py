"""The results store on a real PostgreSQL server (the throwaway cluster of ``conftest.py``)."""

from __future__ import annotations

from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.store import optuna_adapter
from fusion_nas.store.store import Store
from tests.helpers.net import free_port

runner = CliRunner()


def _search(url: str, trials: int, *extra: str):
    return runner.invoke(
        app,
        ["search", "digits", "--dataset", "synthetic", "--trials", str(trials), "--epochs", "1",
         "--name", "pg", "--store", url, *extra],
    )  # fmt: skip


def test_search_resume_and_results_on_postgresql(postgres_url: str) -> None:
    res = _search(postgres_url, 3, "--workers", "2")
    assert res.exit_code == 0, res.output
    assert "postgresql://postgres@127.0.0.1" in res.output
    df = Store(postgres_url).trials("pg")
    assert len(df) == 3 and set(df.status) == {"complete"}
    assert df.arch.map(lambda a: a["space"] == "digits").all()
    assert _search(postgres_url, 5, "--workers", "2").exit_code == 0
    assert list(Store(postgres_url).trials("pg").number) == [0, 1, 2, 3, 4]
    listing = runner.invoke(app, ["results", "--store", postgres_url])
    assert listing.exit_code == 0 and "pg" in listing.output
    store = Store(postgres_url)
    row = store.summary().set_index("name").loc["pg"]
    assert (row.requested, row.done, row.interrupted, row.running) == (5, 5, 0, 0)
    assert store.search_record("pg").dataset == "synthetic" and store.trial("pg", 4)["number"] == 4
    # the bulk readers on PostgreSQL: what Optuna reads, newer trials, summary attributes only
    study_id = store.storage.get_study_id_from_name("pg")
    ours = optuna_adapter.read_trials(store.storage, study_id)
    theirs = store.storage.get_all_trials(study_id)
    assert [(t.number, t.state, t.values, t.user_attrs, t.datetime_complete) for t in ours] == [
        (t.number, t.state, t.values, t.user_attrs, t.datetime_complete) for t in theirs
    ]
    newer = optuna_adapter.read_trials(store.storage, study_id, after=3, numbers=[1])
    assert [t.number for t in newer] == [1, 4]
    narrow = optuna_adapter.read_trials(store.storage, study_id, user_keys=["status", "macs"])
    assert all(set(t.user_attrs) == {"status", "macs"} for t in narrow)


def test_unreachable_postgresql_is_one_line() -> None:
    """Needs only the driver, no server: nothing listens on the port."""
    port = free_port()
    res = runner.invoke(app, ["results", "--store", f"postgresql://postgres@127.0.0.1:{port}/x"])
    assert res.exit_code == 2
    assert "cannot open the results store" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
