"""``fusion-nas search``: the default strategy and the warning about a proxy too short to learn."""

from __future__ import annotations

import warnings

import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.errors import ShortProxyWarning
from fusion_nas.model.space import load_space
from fusion_nas.search.config import DEFAULT_STRATEGY, SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.store import Store
from fusion_nas.training.loop import MIN_PROXY_STEPS, ProxyConfig, proxy_steps, steps_advice

runner = CliRunner()


def search(url: str, *extra: str):
    args = ["search", "digits", "--dataset", "synthetic", "--trials", "1", "--store", url]
    return runner.invoke(app, [*args, *extra], catch_exceptions=False)


@pytest.fixture()
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


def test_proxy_steps_count_the_last_short_batch_and_the_advice_reaches_the_minimum() -> None:
    proxy = ProxyConfig(epochs=3, batch_size=128)
    assert proxy_steps(384, proxy) == 9 and proxy_steps(385, proxy) == 12
    advice = steps_advice(384, proxy)  # the user's 480-image folder after the 20 % carve-out
    assert advice == {"batch_size": 11, "epochs": 34}
    assert proxy_steps(384, ProxyConfig(epochs=3, batch_size=11)) >= MIN_PROXY_STEPS
    assert proxy_steps(384, ProxyConfig(epochs=34, batch_size=128)) >= MIN_PROXY_STEPS
    assert steps_advice(20, ProxyConfig(epochs=1))["batch_size"] is None  # 20 steps at most


def test_a_short_proxy_is_one_yellow_line_with_the_numbers_and_a_fix(url: str) -> None:
    res = search(url, "--train-subset", "64", "--epochs", "1", "--name", "short")
    assert res.exit_code == 0, res.output
    lines = [x for x in res.stderr.splitlines() if "Warning:" in x]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert "only 1 optimiser steps (64 training samples, batch size 128, 1 epoch;" in line
    assert f"fewer than {MIN_PROXY_STEPS}" in line
    assert "--epochs 100 reaches 100" in line and "--batch-size" not in line  # 64 < 100
    res = search(url, "--train-subset", "64", "--epochs", "2", "--batch-size", "16")
    assert res.exit_code == 0, res.output
    assert "--batch-size 1 or --epochs 25 reaches 100" in res.stderr  # 8 steps now
    assert "Warning:" not in res.stdout


def test_a_long_enough_proxy_gives_no_warning(url: str) -> None:
    # 64 samples at batch 8: 8 steps an epoch, 13 epochs: 104 steps.
    res = search(url, "--train-subset", "64", "--batch-size", "8", "--epochs", "13")
    assert res.exit_code == 0, res.output
    assert "Warning" not in res.output and "Warning" not in res.stderr
    assert Store(url).search_record(f"digits-synthetic-{DEFAULT_STRATEGY.split(':')[1]}")


def test_run_search_warns_in_python_too(url: str) -> None:
    proxy = ProxyConfig(epochs=1, train_subset=64)
    config = SearchConfig(name="api", space=load_space("digits"), dataset="synthetic",
                          trials=1, proxy=proxy)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_search(config, Store(url))
    short = [w for w in caught if issubclass(w.category, ShortProxyWarning)]
    assert len(short) == 1 and short[0].filename == __file__  # points at the caller
    info = short[0].message.info
    assert (info["n_train"], info["steps"], info["advice"]["epochs"]) == (64, 1, 100)
    assert "fewer than 100" in str(short[0].message)
