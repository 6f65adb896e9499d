r"""A store written by the per-attribute write path (one Optuna attribute per field) still
opens, lists and resumes.

``tests/data/old_store.db`` was made, from the repository root, by this script (before each
trial's fields became one write):

.. code-block:: python

    # Make tests/data/old_store.db with the per-field trial attributes of the older write path.

    import dataclasses
    import os

    import optuna

    from fusion_nas.evaluation.base import Outcome
    from fusion_nas.model.space import load_space
    from fusion_nas.search.config import SearchConfig
    from fusion_nas.search.session import run_search
    from fusion_nas.store import records
    from fusion_nas.store.records import RetrainRecord, TrialStatus
    from fusion_nas.store.store import Store
    from fusion_nas.evaluation.table import load_table
    from fusion_nas.training.loop import ProxyConfig

    PATH = "tests/data/old_store.db"


    class Flaky:
            # Fails every third network, completes the rest with a made-up accuracy.

        def __init__(self) -> None:
            self.calls = 0

        def evaluate(self, task):
            self.calls += 1
            if self.calls % 3 == 0:
                return Outcome(TrialStatus.FAILED, reason="planted failure")
            return Outcome(TrialStatus.COMPLETE, val_acc=0.5 + 0.01 * self.calls, curve=[0.5])


    if os.path.exists(PATH):
        os.remove(PATH)
    store = Store(f"sqlite:///{PATH}")
    space = load_space("digits")
    table = SearchConfig(
        name="table-sh",
        space=space,
        dataset="digits",
        strategy="optuna:random",
        trials=12,
        proxy=load_table("benchmarks/tables/digits.csv").proxy,
        evaluator="table:benchmarks/tables/digits.csv",
        fidelity="sh:1,3,10/3",
        max_flops=240_000,
    )
    run_search(table, store)
    # A network proposed again (queued with the params of a complete trial): a duplicate.
    first = next(t for t in store.load_study("table-sh").get_trials() if t.state.name == "COMPLETE")
    records.enqueue_prescreened(store.load_study("table-sh"), first.params, {"planted": True})
    run_search(dataclasses.replace(table, trials=24), store)  # resumed
    flaky = SearchConfig(
        name="flaky", space=space, dataset="synthetic", strategy="optuna:nsga2", trials=8,
        proxy=ProxyConfig(epochs=1),
    )
    run_search(flaky, store, evaluator=Flaky())
    # One trial cut short, as an interrupt or a lost process leaves it.
    study = store.load_study("flaky")
    trial = study.ask()
    records.write_proposal(trial, {"space": "digits"}, "x", "planted", 1, 1)
    records.mark_interrupted(store.storage, "flaky", trial.number, "planted interrupt")
    records.write_retrain(study, RetrainRecord(
        search="flaky", trial=0, arch_id="x", arch={}, arch_desc="d", macs=1, params=1,
        proxy_val_acc=0.5, epochs=1, train_samples=1, test_samples=1, test_acc=0.4,
        seconds=1.0, created="2026-01-01T00:00:00+00:00", files={},
    ))
    store.storage.get_study_id_from_name("flaky")  # the store is complete: shrink the file
    import sqlite3  # noqa: E402

    with sqlite3.connect(PATH) as db:
        db.execute("VACUUM")
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from fusion_nas.evaluation.table import load_table
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store import records
from fusion_nas.store.records import TrialStatus
from fusion_nas.store.store import Store

ROOT = Path(__file__).resolve().parents[2]
OLD = ROOT / "tests" / "data" / "old_store.db"


@pytest.fixture
def old_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A copy of the old store, its table search pointed at this checkout's table (the store
    records the absolute path of the checkout that made it, as any moved table would be)."""
    shutil.copy(OLD, tmp_path / "old.db")
    monkeypatch.chdir(ROOT)
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    rec = store.search_record("table-sh")
    table = f"table:{ROOT / 'benchmarks' / 'tables' / 'digits.csv'}"
    records.write_search(store.load_study("table-sh"), dataclasses.replace(rec, evaluator=table))
    return store


def test_old_store_lists_every_status(old_store: Store) -> None:
    table = old_store.trials("table-sh")
    assert table.status.value_counts().to_dict() == {"stopped": 12, "complete": 9, "infeasible": 3}
    assert table.duplicate_of.notna().sum() == 3
    flaky = old_store.trials("flaky")
    assert flaky.status.value_counts().to_dict() == {"complete": 6, "failed": 2, "interrupted": 1}
    records = {r.number: r for r in old_store.records("flaky")}
    failed = [r for r in records.values() if r.status == TrialStatus.FAILED]
    assert all(r.fail_reason == "planted failure" for r in failed)
    (cut,) = [r for r in records.values() if r.status == TrialStatus.INTERRUPTED]
    assert cut.fail_reason == "planted interrupt" and cut.arch_desc == "planted"
    done = [r for r in old_store.records("table-sh") if r.status == TrialStatus.COMPLETE]
    assert all(r.val_acc is not None and r.macs and r.arch_id and r.curve for r in done)
    stopped = [r for r in old_store.records("table-sh") if r.status == TrialStatus.STOPPED]
    assert all(r.rungs and r.fail_reason for r in stopped)
    assert old_store.search("flaky").retrains()[0].test_acc == 0.4


def test_old_store_resumes(old_store: Store) -> None:
    before = old_store.trials("table-sh")
    kept = old_store.records("table-sh")
    config = SearchConfig(
        name="table-sh",
        space=load_space("digits"),
        dataset="digits",
        strategy="optuna:random",
        trials=24,
        proxy=load_table("benchmarks/tables/digits.csv").proxy,
        evaluator="table:benchmarks/tables/digits.csv",
        fidelity="sh:1,3,10/3",
        max_flops=240_000,
    )
    after = run_search(dataclasses.replace(config, trials=30), old_store)
    assert len(after) == 30 and after.status.isin(["complete", "stopped", "infeasible"]).all()
    assert old_store.records("table-sh")[:24] == kept  # the old trials are read as before
    # The new trials find the old ones: a network seen before is recorded as a duplicate.
    old_ids = set(before.arch_id)
    again = after.iloc[24:][after.iloc[24:].arch_id.isin(old_ids)]
    assert again.duplicate_of.notna().all()
