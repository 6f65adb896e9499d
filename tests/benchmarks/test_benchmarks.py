"""Smoke runs of the benchmark scripts (tiny budgets): each writes the figures it promises."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

from fusion_nas.store.records import read_retrains
from fusion_nas.store.store import Store
from tests.helpers.benchmarks import load


@pytest.fixture(scope="module")
def proxy_fidelity() -> ModuleType:
    return load("proxy_fidelity")


def test_spread_over_cost_picks_distinct_architectures_across_the_cost_range(proxy_fidelity):
    from fusion_nas.model.cost import arch_cost
    from fusion_nas.model.space import load_space

    space = load_space("mnist1d")
    picked = proxy_fidelity.spread_over_cost(space, 5, seed=0, max_macs=200_000, pool=40)
    macs = [p["macs"] for p in picked]
    assert len({p["arch_id"] for p in picked}) == 5
    assert max(macs) <= 200_000
    assert max(macs) / min(macs) > 10  # spread over the range, not bunched at one cost
    for p in picked:  # the stored cost is the architecture's exact cost
        from fusion_nas.model.arch import Architecture

        assert arch_cost(Architecture.from_dict(p["arch"]), space).macs == p["macs"]


def test_kendall_tau_per_budget_reads_the_right_pairs(proxy_fidelity):
    rows = [
        {"arch_id": a, "budget": "retrain", "test_acc": t, "seconds": 9.0}
        for a, t in (("a", 0.9), ("b", 0.8), ("c", 0.7))
    ]
    rows += [
        {"arch_id": a, "budget": "2ep", "val_acc": v, "seconds": 1.0}
        for a, v in (("a", 0.5), ("b", 0.4), ("c", 0.3))
    ]
    rows += [
        {"arch_id": a, "budget": "5ep", "val_acc": v, "seconds": 2.0}
        for a, v in (("a", 0.3), ("b", 0.4), ("c", 0.5))
    ]
    summary = proxy_fidelity.summarise(rows, ["2ep", "5ep"])
    assert summary["2ep"]["kendall_tau"] == 1.0
    assert summary["5ep"]["kendall_tau"] == -1.0
    assert summary["5ep"]["seconds_per_trial"] == 2.0


def test_proxy_fidelity_smoke_run_writes_its_figures_and_resumes(proxy_fidelity, tmp_path):
    argv = [
        "--space",
        "digits",
        "--archs",
        "3",
        "--budgets",
        "2ep",
        "--retrain-epochs",
        "1",
        "--workers",
        "1",
        "--pool",
        "40",
        "--out",
        str(tmp_path),
    ]
    doc = proxy_fidelity.main(argv)
    assert doc["archs"] == 3
    assert set(doc["budgets"]) == {"2ep"}
    assert -1.0 <= doc["budgets"]["2ep"]["kendall_tau"] <= 1.0
    written = json.loads((tmp_path / "proxy_fidelity_digits.json").read_text())
    assert written["budgets"] == doc["budgets"]
    assert (tmp_path / "proxy_fidelity_digits.html").read_text().count("Kendall") >= 1
    tests = [r for r in written["rows"] if r["budget"] == "retrain"]
    assert len(tests) == 3 and all(0 <= r["test_acc"] <= 1 for r in tests)
    lines = (tmp_path / "proxy_fidelity_digits.jsonl").read_text().splitlines()
    assert len(lines) == 6
    again = proxy_fidelity.main(argv)  # every run is cached: nothing trains twice
    assert (tmp_path / "proxy_fidelity_digits.jsonl").read_text().splitlines() == lines
    assert again["budgets"] == doc["budgets"]
    # a cache missing one architecture's runs: --cached-only summarises the complete ones
    first = json.loads(lines[0])["arch_id"]
    kept = [line for line in lines if json.loads(line)["arch_id"] != first]
    (tmp_path / "proxy_fidelity_digits.jsonl").write_text("\n".join(kept) + "\n")
    partial = proxy_fidelity.main([*argv, "--cached-only"])
    assert partial["archs"] == 2 and partial["archs_asked"] == 3
    assert {r["arch_id"] for r in partial["rows"]} == {json.loads(x)["arch_id"] for x in kept}


def test_front_vs_baselines_smoke_run_stores_and_compares(tmp_path, capsys):
    front = load("front_vs_baselines")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    argv = [
        "--space",
        "digits",
        "--trials",
        "3",
        "--proxy-epochs",
        "1",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--store",
        url,
        "--out",
        str(tmp_path),
    ]
    doc = front.main(argv)
    store = Store(url, create=False)
    df = store.trials("digits-front")
    assert len(df) == 3
    front_rows = df[df["on_front"]]
    assert len(doc["searched_front"]) == len(front_rows) >= 1
    assert {r["trial"] for r in doc["searched_front"]} == set(front_rows["number"])
    # retrained results are stored with the search, as fusion-nas retrain stores them
    retrained = read_retrains(store.load_study("digits-front").user_attrs)
    assert set(retrained) == set(front_rows["number"])
    names = {b["name"] for b in doc["baselines"]}
    assert {"all-conv", "all-attention"} <= names
    stored = {rec.name for _, rec in store.baselines_for(store.search_record("digits-front"))}
    assert names <= stored
    out = json.loads((tmp_path / "front_vs_baselines_digits.json").read_text())
    assert out["headline"]["best_front_test_acc"]["test_acc"] == max(
        r["test_acc"] for r in doc["searched_front"]
    )
    html = (tmp_path / "front_vs_baselines_digits.html").read_text()
    assert "searched front (retrained)" in html and "baselines (same protocol)" in html
    table = front.markdown(doc)
    assert table.count("| baseline |") == len(doc["baselines"])
    # a second run reuses what the store already holds for this protocol: nothing retrains
    again = front.main(argv)
    assert "; 0 to train" in capsys.readouterr().out
    assert again["searched_front"] == doc["searched_front"]
    assert again["baselines"] == doc["baselines"]


def test_search_speed_smoke_run_writes_one_row_per_worker_count(tmp_path):
    out = tmp_path / "speed.json"
    rows = load("search_speed").main(
        ["--trials", "2", "--workers", "1", "--epochs", "1", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == rows
    assert [r["workers"] for r in rows] == [1]
    assert rows[0]["trials"] == 2 and rows[0]["train_s_mean"] > 0


def test_final_protocol_smoke_run_trains_each_baseline_under_each_schedule(tmp_path):
    bench = load("final_protocol")
    rows = bench.main(
        ["--space", "digits", "--only", "all-conv", "--scale", "0.01", "--out", str(tmp_path)]
    )
    assert len(rows) == len(bench.SCHEDULES)
    assert {(r["lr"], r["batch_size"], r["weight_decay"]) for r in rows} == {
        s[1:] for s in bench.SCHEDULES
    }
    assert all(0 <= r["test_acc"] <= 1 and r["epochs"] >= 1 for r in rows)
    assert json.loads((tmp_path / "final_protocol_digits.json").read_text()) == rows


def test_distributed_throughput_smoke_run_on_sqlite_and_postgresql(tmp_path, postgres_url):
    load("distributed_throughput").main(
        ["--space", "digits", "--dataset", "synthetic", "--trials", "4", "--epochs", "1",
         "--train-subset", "64", "--processes", "2", "--postgres", postgres_url,
         "--pg-processes", "2", "--out", str(tmp_path)]
    )  # fmt: skip
    doc = json.loads((tmp_path / "distributed_throughput.json").read_text())
    assert doc["threads_per_worker"] == 1 and set(doc["stores"]) == {"sqlite", "postgresql"}
    for rows in doc["stores"].values():
        assert [r["processes"] for r in rows] == [1, 2]  # K = 1 is always the reference
        for r in rows:
            assert r["exit_codes"] == [0] * r["processes"] and r["finished"] == 4
            assert len(set(r["summaries"])) == 1 and r["trials_per_minute"] > 0
        assert rows[0]["efficiency"] == 1.0
        assert rows[1]["efficiency"] == pytest.approx(
            rows[1]["trials_per_minute"] / (2 * rows[0]["trials_per_minute"]), abs=1e-3
        )
