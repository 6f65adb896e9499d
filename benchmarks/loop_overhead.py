"""Per-trial cost of the search loop itself, beside plain Optuna, as a search grows.

A table search (``--evaluator table:benchmarks/tables/digits.csv`` on the ``digits`` space)
trains nothing, so what a trial costs is the loop: the sampler, the store's reads and writes,
costing, de-duplication and progress. For each sampler the project's loop (``run_search`` on
a SQLite store, with a progress callback as the command line has) runs ``--trials`` trials;
plain Optuna runs as many ask/tell trials with the same sampler and parameters on the same
kind of storage (a SQLite file opened by :class:`~fusion_nas.store.store.Store`) with a
trivial objective (the table's accuracy and MACs, looked up). Reported per sampler and
window of trial numbers (e.g. 50-150, 950-1,050, 9,900-10,000): the mean process CPU
milliseconds per trial (``time.process_time``, every thread of the process) and the SQL
commits per trial (a SQLAlchemy ``commit`` listener on the store's engine).

    python benchmarks/loop_overhead.py --trials 10000 --samplers optuna:random optuna:nsga2 \
        --dir /dev/shm

Writes ``benchmarks/results/loop_overhead.json``; with ``--resume`` a sampler already in that
file is not run again. With ``--parallel`` the project's run and plain Optuna's run of a sampler
go at once, in two processes (each measures its own process's CPU; the wall time halves where
two cores are free).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from fusion_nas.evaluation.table import load_table
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.loop import Progress
from fusion_nas.search.session import prepare, run_search
from fusion_nas.search.strategies import Proposer
from fusion_nas.store import optuna_adapter, records
from fusion_nas.store.store import Store

ROOT = Path(__file__).resolve().parent
TABLE = ROOT / "tables" / "digits.csv"
OUT = ROOT / "results" / "loop_overhead.json"
WINDOWS = ((50, 150), (950, 1050), (9900, 10000))


def windows(trials: int) -> list[tuple[int, int]]:
    """The windows of trial numbers that fit in ``trials`` (the last one ends at ``trials``)."""
    out = [w for w in WINDOWS if w[1] <= trials]
    if trials not in (w[1] for w in out) and trials > 150:
        out.append((max(150, trials - 100), trials))
    return out


class Commits:
    """Counts the SQL commits on ``store``'s engine."""

    def __init__(self, store: Store) -> None:
        self.n = 0
        engine = optuna_adapter.rdb_engine(store.storage)
        sqlalchemy.event.listen(engine, "commit", self._count)

    def _count(self, _conn: Any) -> None:
        self.n += 1


def _config(sampler: str, trials: int) -> SearchConfig:
    table = load_table(TABLE)
    return SearchConfig(
        name=f"loop-{sampler}",
        space=table.space,
        dataset=table.dataset,
        strategy=sampler,
        trials=trials,
        proxy=table.proxy,
        evaluator=f"table:{TABLE}",
    )


def project(sampler: str, trials: int, where: Path) -> dict[str, Any]:
    """The project's loop: CPU seconds at each recorded trial, and commits per trial."""
    store = Store(f"sqlite:///{where / 'project.db'}")
    commits = Commits(store)
    stamps: list[float] = []  # process CPU seconds when each trial was recorded

    def on_progress(_p: Progress) -> None:
        stamps.append(time.process_time())

    start, wall = time.process_time(), time.perf_counter()
    run_search(_config(sampler, trials), store, on_progress=on_progress)
    wall = time.perf_counter() - wall
    return {
        "cpu": [b - a for a, b in zip([start, *stamps], stamps)],
        "commits": commits.n,
        "wall_s": wall,
    }


def plain(sampler: str, trials: int, where: Path) -> dict[str, Any]:
    """Plain Optuna ask/tell with the same sampler and parameters, a table lookup for values."""
    config = _config(sampler, trials)
    table = load_table(TABLE)
    costs = table.costs()
    strategy = prepare(config)
    assert isinstance(strategy, Proposer)
    store = Store(f"sqlite:///{where / 'plain.db'}")
    commits = Commits(store)
    study = optuna.create_study(
        storage=store.storage,
        study_name="plain",
        directions=list(records.DIRECTIONS),
        sampler=strategy.sampler(config.space, config.seed),
    )
    cpu = []
    wall = time.perf_counter()
    for _ in range(trials):
        start = time.process_time()
        trial = study.ask()
        arch = strategy.propose(trial, config.space)
        acc = table.outcome(arch).val_acc or 0.0
        study.tell(trial, (float(acc), float(costs[arch.arch_id].macs)))
        cpu.append(time.process_time() - start)
    return {"cpu": cpu, "commits": commits.n, "wall_s": time.perf_counter() - wall}


def summary(run: dict[str, Any], trials: int) -> dict[str, Any]:
    """Mean CPU milliseconds per trial in each window, and commits per trial."""
    cpu = run["cpu"]
    return {
        "cpu_ms_per_trial": {
            f"{a}-{b}": round(1000 * sum(cpu[a:b]) / len(cpu[a:b]), 3) for a, b in windows(trials)
        },
        "commits_per_trial": round(run["commits"] / trials, 2),
        "wall_s": round(run["wall_s"], 1),
    }


def main() -> None:
    """Run every sampler; write (or add to) the JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--samplers", nargs="+", default=["optuna:random", "optuna:nsga2"])
    parser.add_argument("--dir", default=None, help="where the SQLite files go (e.g. /dev/shm)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--resume", action="store_true", help="keep samplers already in --out")
    parser.add_argument(
        "--parallel", action="store_true", help="the two runs of a sampler in two processes"
    )
    args = parser.parse_args()
    doc: dict[str, Any] = {}
    if args.resume and args.out.exists():
        doc = json.loads(args.out.read_text())
    doc.setdefault("samplers", {})
    doc["storage"] = f"SQLite file in {args.dir or tempfile.gettempdir()}"
    doc["cpu"] = "time.process_time (all threads of the process), mean per trial in a window"
    for sampler in args.samplers:
        key = f"{sampler}@{args.trials}"
        if key in doc["samplers"]:
            continue
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            if args.parallel:  # separate files (project.db, plain.db), separate processes
                with concurrent.futures.ProcessPoolExecutor(2) as pool:
                    runs = [
                        pool.submit(f, sampler, args.trials, Path(tmp)) for f in (project, plain)
                    ]
                    mine, base = (summary(r.result(), args.trials) for r in runs)
            else:
                mine = summary(project(sampler, args.trials, Path(tmp)), args.trials)
                base = summary(plain(sampler, args.trials, Path(tmp)), args.trials)
        ratio = {
            w: round(mine["cpu_ms_per_trial"][w] / base["cpu_ms_per_trial"][w], 2)
            for w in mine["cpu_ms_per_trial"]
        }
        doc["samplers"][key] = {"fusion_nas": mine, "optuna": base, "ratio_to_optuna": ratio}
        print(key, json.dumps(doc["samplers"][key]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")  # after each sampler: resumable


if __name__ == "__main__":
    main()
