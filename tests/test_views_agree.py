"""Every view of one search counts the same trials per status and shows the same hypervolume.

A real search (digits space, synthetic data, a stand-in evaluator) with one failed and one
interrupted trial, read through ``results`` (table, JSON, CSV), the ``pareto`` report's
embedded figure data and the dashboard API.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.evaluation.base import EvalTask, Outcome
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.queries import STATUSES
from fusion_nas.store.records import TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.web.app import create_app

runner = CliRunner()
NAME = "agree"
EXPECTED = {"complete": 3, "failed": 1, "interrupted": 1}


class ScriptedEvaluator:
    """Completes trials with a score from the architecture, fails the 2nd, Ctrl-C on the 5th."""

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, task: EvalTask) -> Outcome:
        """The outcome of the ``calls``-th evaluation."""
        self.calls += 1
        if self.calls == 2:
            return Outcome(TrialStatus.FAILED, reason="loss became NaN")
        if self.calls == 5:
            raise KeyboardInterrupt
        score = int(hashlib.sha1(task.arch_json.encode()).hexdigest()[:6], 16) / 0xFFFFFF
        acc = 0.5 + 0.4 * score
        return Outcome(TrialStatus.COMPLETE, val_acc=acc, curve=[acc], seconds=0.01)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("agree")
    url = f"sqlite:///{root}/store.db"
    config = SearchConfig(
        name=NAME,
        space=load_space("digits"),
        dataset="synthetic",
        strategy="optuna:random",
        trials=5,
    )
    try:
        run_search(config, Store(url), evaluator=ScriptedEvaluator())
    except KeyboardInterrupt:
        pass  # the search stops; the trial in flight is recorded as interrupted
    return url


def _counts(statuses: list[str]) -> dict[str, int]:
    return {s: statuses.count(s) for s in STATUSES}


def _invoke(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_the_search_has_a_failed_and_an_interrupted_trial(url: str) -> None:
    statuses = list(Store(url, create=False).trials(NAME).status)
    assert {s: n for s, n in _counts(statuses).items() if n} == EXPECTED


def test_every_view_counts_the_same_and_shows_the_same_hypervolume(
    url: str, tmp_path: Path
) -> None:
    views: dict[str, tuple[dict[str, int], float, float]] = {}

    # results --format json: the list of searches, one count column per status
    (row,) = json.loads(_invoke("results", "--store", url, "--format", "json"))
    views["results json"] = (
        {s: row[s] for s in STATUSES},
        round(row["hypervolume"], 4),
        row["ref_macs"],
    )
    # results --format csv
    (csv_row,) = pd.read_csv(io.StringIO(_invoke("results", "--store", url, "-f", "csv"))).to_dict(
        "records"
    )
    views["results csv"] = (
        {s: int(csv_row[s]) for s in STATUSES},
        round(csv_row["hypervolume"], 4),
        float(csv_row["ref_macs"]),
    )
    # results NAME --format json: the trials, counted here
    trials = json.loads(_invoke("results", NAME, "--store", url, "--format", "json"))
    trial_counts = _counts([t["status"] for t in trials])
    # results NAME: the table's caption counts per status and labels the hypervolume
    table = " ".join(_invoke("results", NAME, "--store", url).split())
    caption = dict(re.findall(r"\b(" + "|".join(STATUSES) + r") (\d+)\b", table))
    hv = re.search(
        r"hypervolume (\d+\.\d{4}) \(ref: acc 0, 10x max MACs of this search = ([\d,]+)\)", table
    )
    assert hv, table
    views["results table"] = (
        {s: int(caption[s]) for s in STATUSES},
        float(hv[1]),
        float(hv[2].replace(",", "")),
    )
    # the pareto report: the figure data embedded in the page
    page = tmp_path / "report.html"
    _invoke("pareto", NAME, "--store", url, "--out", str(page))
    html = page.read_text()
    fig = json.loads(re.search(r'id="figure-data">(.*?)</script>', html, re.S)[1])
    (meta,) = fig["layout"]["meta"]["searches"]
    drawn = {s: 0 for s in STATUSES}
    for trace in fig["data"]:
        role = (trace.get("meta") or {}).get("role")
        if role == "trials":
            drawn["complete"] += len(trace["customdata"])
        elif role in drawn:
            drawn[role] += len(trace["customdata"])
    assert drawn == meta["counts"]
    views["report"] = (meta["counts"], round(meta["hypervolume"], 4), meta["ref_macs"])
    assert f"{meta['hypervolume']:.4f} (ref: acc 0, 10x max MACs of this search = " in html
    # the dashboard API
    client = TestClient(create_app(Store(url, create=False)))
    data = client.get("/api/search", params={"name": NAME}).json()
    summary = data["summary"]
    views["dashboard summary"] = (
        {s: summary[s] for s in STATUSES},
        round(summary["hypervolume"], 4),
        summary["ref_macs"],
    )
    (dash,) = data["figures"]["pareto"]["layout"]["meta"]["searches"]
    views["dashboard figure"] = (dash["counts"], round(dash["hypervolume"], 4), dash["ref_macs"])
    listed = client.get("/api/searches").json()["searches"]
    (entry,) = [r for r in listed if r["name"] == NAME]
    views["dashboard list"] = (
        {s: entry[s] for s in STATUSES},
        round(entry["hypervolume"], 4),
        entry["ref_macs"],
    )

    expected = {s: EXPECTED.get(s, 0) for s in STATUSES}
    assert trial_counts == expected
    for view, (counts, hypervolume, ref) in views.items():
        assert counts == expected, view
        assert hypervolume == views["results json"][1] > 0, view
        assert ref == pytest.approx(views["results json"][2]), view
