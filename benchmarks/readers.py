"""How the readers of a results store scale: 100 trials against 10,000.

Builds two SQLite stores (FrozenTrials written directly with ``optuna.trial.create_trial`` and
``study.add_trials``, their attributes those the records writers set, so they read as real
fusion-nas trials; about 60 ms a trial on this machine). A built store is kept under
``$TMPDIR/fusion_nas_readers/``, keyed by the code that writes it (this builder,
``store/records.py``, the Optuna version) and the size, so the next run copies it in a second.
Then it times, wall and CPU, median of ``--repeat`` runs:

- ``/api/trial`` (one trial), ``/api/search`` (first read and a repeat), ``/api/searches``
  (Starlette TestClient over a fresh app, then again over a warm one);
- ``fusion-nas results NAME`` (in-process, Typer's CliRunner), as CSV and as the table;
- the dashboard's search page in headless Chromium (Playwright, ``/usr/bin/chromium``) against
  a served app: from the data's arrival to the plots drawn and the table rendered
  (``body.dataset.arrivedMs`` / ``drawnMs``, set by ``static/app.js``).

And the start-up of the light commands (``--help``, ``spaces``, ``space show mnist1d``,
``results``, ``results NAME``): CPU seconds of a fresh interpreter (``resource.getrusage`` of
the child), median of ``--repeat``, and whether it imported torch; with ``--before DIR`` also
for the code in DIR (e.g. ``git archive <commit> | tar -x -C DIR``).

Writes ``benchmarks/results/readers.json``. Run: ``python benchmarks/readers.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import optuna
from optuna.trial import TrialState

from fusion_nas.model.space import load_space
from fusion_nas.store import records
from fusion_nas.store.records import SearchRecord, TrialStatus, proposal_attrs, result_attrs
from fusion_nas.store.store import Store, quiet_optuna

RESULTS = Path(__file__).resolve().parent / "results" / "readers.json"
SIZES = (100, 10_000)
CHROMIUM = "/usr/bin/chromium"


def fill_search(store: Store, name: str, n: int, *, running: int = 0, seed: int = 0) -> None:
    """A search of ``n`` finished trials (about 1 in 10 failed) and ``running`` running ones.

    Written in batches through ``study.add_trials``: seconds for 10,000 trials, not hours.
    """
    space = load_space("digits")
    record = SearchRecord(
        space_name=space.name,
        space_toml=space.source,
        dataset="synthetic",
        proxy={"epochs": 1},
        strategy="optuna:random",
        seed=seed,
        n_trials=n + running,
    )
    study = store.create_study(name, record)
    rng = random.Random(seed)
    archs = [space.sample(random.Random(seed * 1000 + i)) for i in range(50)]
    batch: list[optuna.trial.FrozenTrial] = []
    for i in range(n + running):
        arch = archs[i % len(archs)]
        macs = rng.randint(10_000, 5_000_000)
        acc = min(0.99, 0.3 + 0.6 * (macs / 5_000_000) ** 0.3 + rng.gauss(0, 0.03))
        attrs = proposal_attrs(arch.to_dict(), arch.arch_id, arch.describe(), macs, 2 * macs)
        if i >= n:
            state, values = TrialState.RUNNING, None
        elif rng.random() < 0.1:
            attrs |= result_attrs(TrialStatus.FAILED, fail_reason="loss became NaN")
            state, values = TrialState.FAIL, None
        else:
            done = {"val_acc": acc, "curve": [acc / 2, acc], "train_seconds": 1.0}
            attrs |= result_attrs(TrialStatus.COMPLETE, **done)
            state, values = TrialState.COMPLETE, [acc, float(macs)]
        batch.append(optuna.trial.create_trial(state=state, values=values, user_attrs=attrs))
        if len(batch) == 1000:
            study.add_trials(batch)
            batch = []
    if batch:
        study.add_trials(batch)


def _cache_key(n: int, running: int) -> str:
    """What a built store depends on: the builder, the records module, Optuna, the size."""
    parts = [inspect.getsource(fill_search), inspect.getsource(records), optuna.__version__]
    parts += [str(n), str(running)]
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


def built_store(path: Path, name: str, n: int, *, running: int = 2) -> tuple[str, float, bool]:
    """A store at ``path`` holding search ``name`` of ``n`` trials (:func:`fill_search`).

    Copied from the cache when the same code built one before; else built, then cached.
    Returns ``(url, seconds, cached)``.
    """
    cache = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "fusion_nas_readers"
    cache.mkdir(parents=True, exist_ok=True)
    kept = cache / f"{name}-{_cache_key(n, running)}.db"
    t0 = time.perf_counter()
    cached = kept.exists()
    if not cached:
        part = kept.with_suffix(f".{os.getpid()}.part")
        part.unlink(missing_ok=True)
        fill_search(Store(f"sqlite:///{part}"), name, n, running=running)
        part.replace(kept)  # whole or not at all
    shutil.copyfile(kept, path)
    return f"sqlite:///{path}", time.perf_counter() - t0, cached


def _timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``repeat`` calls of ``fn``."""
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def _api(url: str, repeat: int, name: str, n: int) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from fusion_nas.web import create_app

    def get(client: TestClient, path: str, **params: Any) -> None:
        response = client.get(f"{path}?{urlencode(params)}")
        assert response.status_code == 200, response.text[:300]

    def fresh(path: str, **params: Any) -> Callable[[], None]:
        def run() -> None:  # a new store and app: nothing cached
            with TestClient(create_app(Store(url, create=False))) as client:
                get(client, path, **params)

        return run

    warm = TestClient(create_app(Store(url, create=False)))
    get(warm, "/api/searches")  # fills the store's cache
    last = n - 1
    return {
        "api_trial": _timed(lambda: get(warm, "/api/trial", search=name, number=last // 2), repeat),
        "api_trial_fresh": _timed(fresh("/api/trial", search=name, number=last // 2), repeat),
        "api_search_fresh": _timed(fresh("/api/search", name=name), repeat),
        "api_search_warm": _timed(lambda: get(warm, "/api/search", name=name), repeat),
        "api_search_poll": _timed(
            lambda: get(warm, "/api/search", name=name, since="x", after=last), repeat
        ),
        "api_searches_fresh": _timed(fresh("/api/searches"), repeat),
        "api_searches_warm": _timed(lambda: get(warm, "/api/searches"), repeat),
    }


def _results_cli(url: str, name: str, repeat: int, fmt: str = "csv") -> dict[str, float]:
    from typer.testing import CliRunner

    from fusion_nas.cli.app import app

    runner = CliRunner()

    def run() -> None:
        out = runner.invoke(app, ["results", name, "--store", url, "--format", fmt])
        assert out.exit_code == 0, out.output[-300:]

    return _timed(run, repeat)


def _browser(url: str, name: str, repeat: int) -> dict[str, Any]:
    """Data arrival to drawn plots and table on the search page, in headless Chromium."""
    if not Path(CHROMIUM).exists():
        return {"skipped": f"no Chromium at {CHROMIUM}"}
    from playwright.sync_api import sync_playwright

    from fusion_nas.web import background_server

    spans: list[float] = []
    webgl = False
    with (
        background_server(Store(url, create=False), poll_ms=60_000) as base,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
            ],  # fmt: skip
        )
        try:
            for _ in range(repeat):
                page = browser.new_page()
                page.goto(f"{base}/search?{urlencode({'name': name})}")
                page.wait_for_function("() => !!document.body.dataset.drawnMs", timeout=120_000)
                arrived, drawn = page.evaluate(
                    "() => [Number(document.body.dataset.arrivedMs), "
                    "Number(document.body.dataset.drawnMs)]"
                )
                webgl = webgl or bool(page.query_selector("#pareto canvas"))
                spans.append((drawn - arrived) / 1000)
                page.close()
        finally:
            browser.close()
    return {"interactive_s": statistics.median(spans), "runs": spans, "webgl": webgl}


_PROBE = """
import json, sys
sys.argv = ["fusion-nas", *json.loads(sys.argv[1])]
from fusion_nas.cli.app import main
try:
    main()
except SystemExit:
    pass
print(json.dumps({"torch": "torch" in sys.modules}), file=sys.stderr)
"""


def _startup_one(code: Path, args: list[str]) -> tuple[float, bool]:
    """CPU seconds (user + system) of ``fusion-nas ARGS`` run from ``code``, and whether it
    imported torch."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=code,
        timeout=300,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, bool(json.loads(proc.stderr.strip().splitlines()[-1])["torch"])


def startup(code: Path, url: str, name: str, repeat: int) -> dict[str, Any]:
    """:func:`_startup_one` of each light command, median CPU of ``repeat`` runs."""
    commands = {
        "--help": ["--help"],
        "spaces": ["spaces"],
        "space show mnist1d": ["space", "show", "mnist1d"],
        "results": ["results", "--store", url],
        "results NAME": ["results", name, "--store", url],
    }
    out: dict[str, Any] = {}
    for label, args in commands.items():
        runs = [_startup_one(code, args) for _ in range(repeat)]
        out[label] = {
            "cpu_s": statistics.median(cpu for cpu, _ in runs),
            "torch": any(t for _, t in runs),
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build the stores, time every reader against both, write :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--no-startup", action="store_true")
    args = parser.parse_args(argv)
    quiet_optuna()
    out: dict[str, Any] = {"repeat": args.repeat, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            name = f"readers-{n}"
            url, built, cached = built_store(Path(tmp) / f"readers_{n}.db", name, n)
            row: dict[str, Any] = {"build_s": built, "build_cached": cached}
            row.update(_api(url, args.repeat, name, n))
            row["results_cli"] = _results_cli(url, name, args.repeat)
            row["results_cli_table"] = _results_cli(url, name, args.repeat, "table")
            if not args.no_browser:
                row["dashboard"] = _browser(url, name, args.repeat)
            out["sizes"][str(n)] = row
            print(json.dumps({n: row}, indent=1), file=sys.stderr)
            if not args.no_startup and n == min(args.sizes):
                here = Path(__file__).resolve().parents[1]
                codes = {"after": here, **({"before": args.before} if args.before else {})}
                out["startup"] = {k: startup(c, url, name, args.repeat) for k, c in codes.items()}
                print(json.dumps(out["startup"], indent=1), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
