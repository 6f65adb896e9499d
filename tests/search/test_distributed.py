"""Several ``fusion-nas search`` processes on one search: joining, heartbeats, kills, signals.

Every test starts real processes (``python -m fusion_nas search ...``) against a real store:
SQLite files and the PostgreSQL server of ``conftest.py``. Nothing is mocked. The heartbeat is
1 s (``FUSION_NAS_HEARTBEAT``), so a lost trial is failed 3 s after its worker died.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusion_nas.errors import StoreError
from fusion_nas.search.workers import NOT_NEEDED, tally
from fusion_nas.store.records import LOST_WORKER, TrialRecord, TrialStatus
from fusion_nas.store.store import Store

DONE = re.compile(r"Done in [\d.]+ s: (.*)")


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FUSION_NAS_HOME=str(tmp_path / "home"),
        FUSION_NAS_HEARTBEAT="1",
        OMP_NUM_THREADS="1",  # the same threads per worker however many run
        COLUMNS="200",
    )
    env.pop("FUSION_NAS_STORE", None)
    return env


_SPAWNED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_orphans():
    """Kill whatever a failing test left running."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def spawn(tmp_path: Path, url: str, name: str, trials: int, *extra: str) -> subprocess.Popen:
    """One ``search`` process on the ``digits`` space with synthetic data (stdout+stderr piped)."""
    cmd = [
        sys.executable, "-m", "fusion_nas", "search", "digits", "--dataset", "synthetic",
        "--trials", str(trials), "--epochs", "1", "--train-subset", "64", "--name", name,
        "--store", url, *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a signal sent to it does not reach pytest
        # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited
        # SIG_IGN; give the child the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _SPAWNED.append(proc)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    """Exit code and output of ``proc``."""
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def trials(url: str, name: str) -> list[TrialRecord]:
    return Store(url).records(name)


def check_shared_search(url: str, name: str, n: int) -> list[TrialRecord]:
    """Exactly ``n`` counted trials, none running, unique numbers, no network trained twice."""
    study = Store(url).load_study(name)
    frozen = study.get_trials(deepcopy=False)
    count = tally(frozen)
    assert (count.finished, count.running, count.waiting) == (n, 0, 0)
    numbers = [t.number for t in frozen]
    assert sorted(numbers) == list(range(len(numbers)))
    recs = [TrialRecord.from_trial(t) for t in frozen]
    trained = [
        r.arch_id
        for r in recs
        if r.status == TrialStatus.COMPLETE and r.duplicate_of is None and r.retry_of is None
    ]
    assert len(trained) == len(set(trained)), "a network was trained twice"
    extra = [r for r in recs if not r.status.finished]
    assert all(r.fail_reason in (NOT_NEEDED, LOST_WORKER) for r in extra), extra
    return recs


def started(proc: subprocess.Popen, url: str, name: str, timeout: float = 120) -> None:
    """Wait until search ``name`` has a trial being trained (``proc`` runs it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"exit code {proc.returncode}: {proc.communicate()[0]}")
        try:
            if any(r.status == TrialStatus.RUNNING for r in trials(url, name)):
                return
        except Exception:  # not created yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"search {name!r} never started a trial")


def _workers_together(tmp_path: Path, url: str, name: str, k: int, n: int, *extra: str) -> None:
    procs = [spawn(tmp_path, url, name, n, *extra) for _ in range(k)]
    results = [finish(p) for p in procs]
    summaries = set()
    for code, out in results:
        assert code == 0, out
        assert "Traceback" not in out
        match = DONE.search(out)
        assert match, out
        summaries.add(match.group(1))
    assert len(summaries) == 1, summaries  # every process reports the same counts
    check_shared_search(url, name, n)


def test_three_workers_share_one_search_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    _workers_together(tmp_path, postgres_url, "shared-pg", 3, 9)


def test_two_workers_share_one_search_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    _workers_together(tmp_path, url, "shared", 2, 8, "--workers", "2")  # 2 x 2 trainers
    with sqlite3.connect(tmp_path / "shared.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_second_process_joins_and_the_first_keeps_running(tmp_path: Path) -> None:
    """The held-out reproduction: the second process starts while the first trains."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = spawn(tmp_path, url, "shared", 8, "--epochs", "3")
    started(first, url, "shared")
    second = spawn(tmp_path, url, "shared", 8, "--epochs", "3")
    for code, out in (finish(first), finish(second)):
        assert code == 0 and "Traceback" not in out, out
        assert "Done in" in out and "interrupted" not in out.split("Done in")[1], out
    recs = check_shared_search(url, "shared", 8)
    assert {r.status for r in recs if r.status.finished} == {TrialStatus.COMPLETE}


def test_a_killed_worker_s_trial_is_failed_by_heartbeat_and_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    n = 6
    # seconds per trial: long enough to kill a worker in the middle of one
    slow = ("--epochs", "12", "--train-subset", "512")
    victim = spawn(tmp_path, url, "kill", n, *slow)
    started(victim, url, "kill")
    other = spawn(tmp_path, url, "kill", n, *slow)
    # wait until the victim has finished a trial and is training another
    end = time.monotonic() + 120
    mine = f":{victim.pid}"
    while time.monotonic() < end:
        recs = trials(url, "kill")
        done = [r for r in recs if r.status == TrialStatus.COMPLETE]
        running = [
            r
            for r in Store(url).load_study("kill").get_trials(deepcopy=False)
            if r.state.name == "RUNNING" and str(r.user_attrs.get("worker", "")).endswith(mine)
        ]
        if done and running and running[0].user_attrs.get("arch_id"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the victim never trained a second trial")
    before = {r.number: (r.val_acc, r.macs, r.arch_id) for r in trials(url, "kill") if r.val_acc}
    killed = running[0].number
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert next(r for r in trials(url, "kill") if r.number == killed).status == "running"
    code, out = finish(other)
    assert code == 0 and "Traceback" not in out, out

    recs = check_shared_search(url, "kill", n)
    by_number = {r.number: r for r in recs}
    lost = by_number[killed]
    assert lost.status == TrialStatus.FAILED and lost.fail_reason == LOST_WORKER
    retries = [r for r in recs if r.retry_of == killed]
    assert len(retries) == 1 and retries[0].status == TrialStatus.COMPLETE
    assert retries[0].arch_id == lost.arch_id  # the same network, run again
    for number, values in before.items():  # finished work is untouched
        r = by_number[number]
        assert (r.val_acc, r.macs, r.arch_id) == values
    with sqlite3.connect(tmp_path / "kill.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    listing = subprocess.run(
        [sys.executable, "-m", "fusion_nas", "results", "kill", "--store", url],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"retry of #{killed}" in listing.stdout and "worker lost" in listing.stdout


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_records_open_trials_and_the_same_command_resumes(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    url = f"sqlite:///{tmp_path / 'sig.db'}"
    slow = ("--epochs", "12", "--train-subset", "512", "--workers", "2")
    proc = spawn(tmp_path, url, "sig", 4, *slow)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            recs = trials(url, "sig")
        except StoreError:  # the process has not created the search yet
            recs = []
        if any(r.status == TrialStatus.COMPLETE for r in recs) and any(
            r.status == TrialStatus.RUNNING for r in recs
        ):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no trial was running after one had finished")
    os.kill(proc.pid, sig)
    exit_code, out = finish(proc)
    assert exit_code == code, out
    stopped = [line for line in out.splitlines() if "Stopped" in line]
    assert len(stopped) == 1 and sig.name.replace("SIGINT", "Ctrl-C") in stopped[0]
    assert "Traceback" not in out
    recs = trials(url, "sig")
    assert not any(r.status == TrialStatus.RUNNING for r in recs)
    cut = [r for r in recs if r.status == TrialStatus.INTERRUPTED]
    assert cut and all(
        r.fail_reason
        == ("stopped by SIGTERM" if sig == signal.SIGTERM else "stopped by the user (Ctrl-C)")
        for r in cut
    )
    again = spawn(tmp_path, url, "sig", 4, *slow)
    exit_code, out = finish(again)
    assert exit_code == 0 and "Resuming search sig" in out, out
    recs = trials(url, "sig")
    assert sum(r.status == TrialStatus.COMPLETE for r in recs) == 4


def test_a_lost_trial_does_not_count_before_its_retry() -> None:
    """The count below a retry's number leaves out the lost trial that the retry re-runs."""
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize"])
    done = {"status": "complete", "val_acc": 0.5}
    study.add_trial(optuna.create_trial(values=[0.5, 1.0], user_attrs=done))
    lost = optuna.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"status": "running"})
    study.add_trial(lost)  # failed by another worker's heartbeat check
    retry = optuna.create_trial(
        state=optuna.trial.TrialState.WAITING,
        system_attrs={"failed_trial": 1, "retry_history": [1]},
    )
    study.add_trial(retry)
    trials = study.get_trials(deepcopy=False)
    assert tally(trials) == tally(trials, below=3)
    assert (tally(trials).finished, tally(trials).waiting) == (1, 1)
    assert tally(trials, below=2).finished == 1  # not 2: #1 is re-run by #2
    assert TrialRecord.from_trial(trials[1]).fail_reason == LOST_WORKER
    assert TrialRecord.from_trial(trials[2]).retry_of == 1
