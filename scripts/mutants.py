"""Mutation check: apply known-bad changes to a copy of the code and see the tests fail.

Each mutation is a small edit a real regression could make (the optimiser step dropped, every
strategy turned into random search, ...). For each one the script copies the working tree to a
temporary directory, applies the edit (it must match the source exactly once per site, so a
mutation that no longer applies is reported, not silently skipped), and runs the tests that
should notice. A mutation is *killed* when those tests fail and *survives* when they pass.
The unmutated copy runs first: if it does not pass, nothing else means anything.

    python scripts/mutants.py                 # all mutations, their tests, a table at the end
    python scripts/mutants.py no-step budget  # some of them
    python scripts/mutants.py --list          # what each one changes
    python scripts/mutants.py --json out.json # also write the outcome as JSON
    python scripts/mutants.py --tests-from REV # today's code, the tests of commit REV
    python scripts/mutants.py --all-tests     # every test file, not only each mutation's own

Exit code 0 when the baseline passes and every mutation is killed, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
console = Console()


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` by ``new`` in ``path`` (``old`` must occur exactly once)."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutation:
    """A named regression: its edits and the test files that must catch it."""

    name: str
    what: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


_SEARCH_TESTS = ("tests/search/test_loop.py", "tests/search/test_search.py")

MUTATIONS = (
    Mutation(
        "no-step",
        "no optimiser step: the one training loop (proxy run, final run, baselines, supernet) "
        "computes gradients and never applies them",
        (Edit("fusion_nas/training/loop.py", "            opt.step()\n", ""),),
        (
            "tests/training/test_train.py",
            "tests/evaluation/test_evaluate.py",
            "tests/analysis/test_baselines.py",
            "tests/search/test_supernet.py",
            *_SEARCH_TESTS,
        ),
    ),
    Mutation(
        "all-random",
        "every strategy replaced by random sampling (Optuna samplers and NNI strategies)",
        (
            Edit(
                "fusion_nas/search/strategies/optuna_strategies.py",
                "optuna.samplers.NSGAIISampler(population_size=self.population, seed=seed)",
                "optuna.samplers.RandomSampler(seed=seed)",
            ),
            Edit(
                "fusion_nas/search/strategies/optuna_strategies.py",
                "optuna.samplers.TPESampler(\n"
                "            seed=seed, multivariate=True, n_startup_trials=self.seed_trials\n"
                "        )",
                "optuna.samplers.RandomSampler(seed=seed)",
            ),
            Edit(
                "fusion_nas/search/strategies/optuna_strategies.py",
                '_GridSampler({"arch": list(range(space.num_architectures()))}, seed=seed)',
                "optuna.samplers.RandomSampler(seed=seed)",
            ),
            Edit(
                "fusion_nas/search/strategies/nni_strategies.py",
                "        return strategy\n",
                "        strategy = api.Random(seed=seed)\n"
                "        strategy.load_state_dict(tried)\n"
                "        return strategy\n",
            ),
        ),
        (
            "tests/search/test_strategies.py",
            "tests/search/test_nni.py",
            "tests/search/test_loop.py",
        ),
    ),
    Mutation(
        "ask-all-first",
        "tell moved after all asks: every trial is asked before any result is told",
        (
            Edit(
                "fusion_nas/search/loop.py",
                "            self._collect(0.0)  # every result already in: tell it before the"
                " next ask\n"
                "            if len(self._open) < self.config.workers:\n",
                "            if True:  # ask while the search has room, whatever is open\n",
            ),
        ),
        (*_SEARCH_TESTS, "tests/search/test_strategies.py"),
    ),
    Mutation(
        "threads-ignored",
        "thread count ignored: a trial and a worker train with whatever torch defaults to",
        (
            Edit(  # the built-in training evaluator, in-process or in a worker
                "fusion_nas/evaluation/trainer.py",
                "            if task.threads:\n"
                "                torch.set_num_threads(task.threads)\n",
                "",
            ),
            Edit(  # the worker process entry of every pool's worker
                "fusion_nas/evaluation/pools.py",
                "    torch.set_num_threads(threads)\n    while True:\n",
                "    while True:\n",
            ),
        ),
        ("tests/evaluation/test_evaluate.py", *_SEARCH_TESTS),
    ),
    Mutation(
        "no-budget",
        "budget check removed: over-budget networks are trained like any other",
        (
            Edit(
                "fusion_nas/search/loop.py",
                "        if max(over_macs, over_params, over_latency) > 0:\n",
                "        if False:\n",
            ),
        ),
        (*_SEARCH_TESTS, "tests/search/test_strategies.py", "tests/cli/test_cli.py"),
    ),
    Mutation(
        "loose-onnx",
        "allclose tolerance of the export equivalence check loosened from 1e-4 to 1e-2",
        (
            Edit(
                "fusion_nas/deploy/export.py",
                "torch.allclose(got, expected, atol=1e-4)",
                "torch.allclose(got, expected, atol=1e-2)",
            ),
        ),
        ("tests/deploy/test_export.py", "tests/cli/test_cli_export.py"),
    ),
)


def _copy_tree(dest: Path) -> None:
    """Copy the working tree (tracked and untracked-but-not-ignored files, links as links)."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, sorted(set(listing.split("\0")))):
        src, dst = ROOT / rel, dest / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


def apply(mutation: Mutation, tree: Path) -> None:
    """Apply every edit of ``mutation`` under ``tree``; raise if one does not match once."""
    for edit in mutation.edits:
        path = tree / edit.path
        text = path.read_text()
        count = text.count(edit.old)
        if count != 1:
            raise RuntimeError(
                f"{mutation.name}: the text to replace occurs {count} times in {edit.path} "
                "(expected once); update the mutation to the current code"
            )
        path.write_text(text.replace(edit.old, edit.new))


def _tests_from(rev: str, tree: Path) -> None:
    """Replace ``tree/tests`` by the tests of commit ``rev`` (to measure an older suite)."""
    shutil.rmtree(tree / "tests")
    archive = subprocess.run(
        ["git", "archive", rev, "tests"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)


def run_tests(tree: Path, tests: tuple[str, ...], first: bool) -> tuple[int, list[str], float]:
    """Run ``tests`` in ``tree`` (imports resolve to the copy); return rc, failed ids, seconds.

    Test files the tree does not have (an older suite) are left out; none left: rc 5.
    """
    tests = tuple(t for t in tests if (tree / t).exists())
    if not tests:
        return 5, [], 0.0
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "FUSION_NAS_NO_SKIP": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *tests]
    if first:
        cmd.insert(3, "-x")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
    return proc.returncode, failed, time.perf_counter() - start


def _check_imports(tree: Path) -> None:
    """The copy, not the installed package, must be what the tests import."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run(
        [sys.executable, "-c", "import fusion_nas; print(fusion_nas.__file__)"],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"tests would import fusion_nas from {where}, not from the copy")


def main(
    names: Annotated[
        list[str] | None, typer.Argument(help="mutations to run (default: all)")
    ] = None,
    list_only: Annotated[bool, typer.Option("--list", help="describe the mutations")] = False,
    first: Annotated[
        bool, typer.Option("--first", help="stop each run at its first failure")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the outcome here")] = None,
    tests_from: Annotated[
        str | None, typer.Option("--tests-from", help="use the tests of this commit")
    ] = None,
    all_tests: Annotated[
        bool, typer.Option("--all-tests", help="run every test file against each mutation")
    ] = False,
) -> None:
    """Run the baseline and each mutation against its tests; print which tests kill it."""
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    unknown = set(names or ()) - {m.name for m in MUTATIONS}
    if unknown:
        allowed = ", ".join(m.name for m in MUTATIONS)
        console.print(f"unknown mutation(s) {', '.join(sorted(unknown))}; allowed: {allowed}")
        raise typer.Exit(2)
    if list_only:
        for m in chosen:
            console.print(f"[bold]{m.name}[/]: {m.what}\n  tests: {' '.join(m.tests)}")
        return
    outcome: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fusion-nas-mutants-") as tmp:
        base = Path(tmp) / "baseline"
        _copy_tree(base)
        _check_imports(base)
        if tests_from:
            _tests_from(tests_from, base)
        used = ("tests",) if all_tests else tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        with console.status("baseline: the unmutated copy runs every test file used below"):
            rc, failed, seconds = run_tests(base, used, first=False)
        outcome.append({"name": "baseline", "rc": rc, "failed": failed, "seconds": seconds})
        console.print(f"baseline: rc {rc}, {len(failed)} failing, {seconds:.0f} s")
        for m in chosen:
            tree = Path(tmp) / m.name
            shutil.copytree(base, tree, symlinks=True)
            apply(m, tree)
            with console.status(f"{m.name}: {m.what}"):
                rc, failed, seconds = run_tests(tree, ("tests",) if all_tests else m.tests, first)
            outcome.append(
                {"name": m.name, "what": m.what, "rc": rc, "failed": failed, "seconds": seconds}
            )
            verdict = "killed" if rc == 1 else "SURVIVED" if rc == 0 else f"error (rc {rc})"
            console.print(f"{m.name}: {verdict} by {len(failed)} tests, {seconds:.0f} s")
            shutil.rmtree(tree, ignore_errors=True)
    table = Table("mutation", "verdict", "killed by")
    for row in outcome[1:]:
        verdict = {1: "killed", 0: "survived"}.get(row["rc"], f"error rc {row['rc']}")
        table.add_row(row["name"], verdict, "\n".join(row["failed"]) or "-")
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(outcome, indent=2) + "\n")
    ok = outcome[0]["rc"] == 0 and all(row["rc"] == 1 for row in outcome[1:])
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    typer.run(main)
