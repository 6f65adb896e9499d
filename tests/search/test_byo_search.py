"""End to end: a search over the user's own data and training function.

``run_search(config, store, evaluator=..., data=..., train_fn=...)``: the user's datasets with
the built-in trainer, the user's training function with successive halving, two workers and a
resume, and an evaluator object of the user's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from fusion_nas.evaluation import FunctionEvaluator, Outcome
from fusion_nas.model.space import load_space
from fusion_nas.store.records import TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.training.data import DataSplits
from fusion_nas.training.loop import ProxyConfig


def user_splits(n: int = 96) -> DataSplits:
    """The user's own (N, 1, 8, 8) images for the digits space."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n // 2, 1, 8, 8, generator=g)
    y = x.flatten(1)[:, :10].argmax(1)
    return DataSplits(TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:]), name="user")


def user_train_fn(model: torch.nn.Module, data: DataSplits, device: str, report) -> float:
    """Top level, so the worker processes can import it: squared error on one-hot targets."""
    x, y = (t.to(device) for t in data.train.tensors)
    xv, yv = (t.to(device) for t in data.val.tensors)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    acc = 0.0
    for epoch in range(1, report.epochs + 1):
        for i in range(0, len(y), 32):
            out = model(x[i : i + 32]).softmax(1)
            loss = ((out - torch.nn.functional.one_hot(y[i : i + 32], 10)) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        report(epoch, acc)
    return acc


def _config(name: str, **kw):
    from fusion_nas.search.config import SearchConfig  # after the split of search/loop.py

    return SearchConfig(
        name=name,
        space=load_space("digits"),
        dataset="user",
        trials=kw.pop("trials", 4),
        proxy=ProxyConfig(epochs=kw.pop("epochs", 1), batch_size=32),
        device="cpu",
        **kw,
    )


def test_a_search_trains_on_the_users_tensor_dataset(tmp_path: Path) -> None:
    from fusion_nas.search.session import run_search

    store = Store(f"sqlite:///{tmp_path}/byo.db")
    df = run_search(_config("byo-data"), store, data=user_splits())
    assert len(df) == 4 and set(df.status) == {"complete"}
    assert df.val_acc.between(0, 1).all()


def test_a_search_runs_the_users_train_fn_with_halving_in_two_workers(tmp_path: Path) -> None:
    from fusion_nas.search.session import run_search

    store = Store(f"sqlite:///{tmp_path}/byo.db")
    config = _config("byo-fn", trials=6, epochs=3, fidelity="sh:1,3/3", workers=2)
    df = run_search(config, store, train_fn=user_train_fn, data=user_splits())
    assert len(df) == 6 and set(df.status) <= {"complete", "stopped"}
    assert "stopped" in set(df.status)  # successive halving stopped some at the first rung
    done = df[df.status == "complete"]
    assert all(len(c) == 3 for c in done.curve)  # promoted: re-run up to the last rung
    # resume: the same search goes on to more trials with the same train_fn
    more = run_search(
        _config("byo-fn", trials=8, epochs=3, fidelity="sh:1,3/3", workers=2),
        store,
        evaluator=FunctionEvaluator(user_train_fn, user_splits()),
    )
    assert len(more) == 8


def test_an_evaluator_object_replaces_the_training(tmp_path: Path) -> None:
    from fusion_nas.search.session import run_search

    class Constant:
        def evaluate(self, task):
            return Outcome(TrialStatus.COMPLETE, 0.5, [0.5], 0.0)

    store = Store(f"sqlite:///{tmp_path}/byo.db")
    df = run_search(_config("byo-eval", trials=3), store, evaluator=Constant())
    assert df.val_acc.tolist() == [0.5, 0.5, 0.5]


def test_data_of_the_wrong_shape_is_refused_before_the_store_is_written(tmp_path: Path) -> None:
    from fusion_nas.errors import FusionNasError
    from fusion_nas.search.session import run_search

    x = torch.randn(40, 1, 9, 9)  # the digits space takes (1, 8, 8)
    data = DataSplits(TensorDataset(x, torch.zeros(40, dtype=torch.long)), TensorDataset(x, x))
    store = Store(f"sqlite:///{tmp_path}/byo.db")
    with pytest.raises(FusionNasError, match=r"data.train samples have shape \(1, 9, 9\)"):
        run_search(_config("byo-shape"), store, data=data)
    assert not store.has_search("byo-shape")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"evaluator": "x", "data": "d"}, "pass either an evaluator or data"),
        ({"evaluator": object()}, "has no evaluate"),
        ({"data": (1, 2)}, "data must be a DataSplits"),
        ({"train_fn": 3}, "train_fn must be callable"),
    ],
)
def test_evaluator_arguments_that_cannot_hold_get_one_line(kw: dict, message: str) -> None:
    from fusion_nas.errors import FusionNasError
    from fusion_nas.search.session import resolve_evaluator

    if kw.get("data") == "d":
        kw["data"] = user_splits()
    with pytest.raises(FusionNasError, match=message) as info:
        resolve_evaluator(_config("byo-bad"), **kw)
    assert "\n" not in str(info.value)
