"""The results store on a real PostgreSQL server (the throwaway cluster of ``conftest.py``)."""

from __future__ import annotations

from typer.testing import CliRunner

from fusion_nas.cli.app import app
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


def test_unreachable_postgresql_is_one_line() -> None:
    """Needs only the driver, no server: nothing listens on the port."""
    port = free_port()
    res = runner.invoke(app, ["results", "--store", f"postgresql://postgres@127.0.0.1:{port}/x"])
    assert res.exit_code == 2
    assert "cannot open the results store" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
