"""Proxy weights of a trial, and the final retraining that reports *test* accuracy.

``proxy_weights`` re-runs a trial's proxy training with the search's recorded seed and
settings (training is deterministic for a given seed and thread count) and checks that the
validation accuracy matches the stored one. ``retrain`` trains the architecture from scratch
on the full training split (train + validation) with a longer schedule and only then
evaluates it on the test split, once. It is the only code path that touches the test split.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from fusion_nas.arch import Architecture
from fusion_nas.data import load_dataset
from fusion_nas.errors import DatasetError
from fusion_nas.evaluate import dataset_for
from fusion_nas.export import write_export
from fusion_nas.model import build_model
from fusion_nas.records import RetrainRecord, SearchRecord, write_retrain
from fusion_nas.results import safe_filename
from fusion_nas.settings import retrain_dir
from fusion_nas.space import SearchSpace, parse_space
from fusion_nas.store import Store
from fusion_nas.train import ProxyConfig, evaluate_accuracy, train_proxy


def record_space(record: SearchRecord, name: str) -> SearchSpace:
    """The search space a search ran on (its stored TOML, not today's file)."""
    return parse_space(record.space_toml, source=f"<space of {name}>")


def search_space(store: Store, name: str) -> SearchSpace:
    """The search space search ``name`` ran on (its stored TOML, not today's file)."""
    return record_space(store.search(name), name)


def default_out_dir(name: str, number: int) -> Path:
    """``<retrain dir>/<search>-trial<N>``: where ``retrain`` writes when no folder is given."""
    return retrain_dir() / f"{safe_filename(name)}-trial{int(number)}"


def proxy_weights(
    store: Store, name: str, row: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], float | None]:
    """Re-run the trial's proxy training; return its ``state_dict`` and validation accuracy.

    Uses the trial's recorded thread count: on a CPU the result depends on it.
    """
    record = store.search(name)
    space = record_space(record, name)
    proxy = ProxyConfig(**record.proxy)
    splits = dataset_for(
        record.dataset,
        space.source,
        record.data_dir,
        proxy.val_fraction,
        record.seed,
        proxy.train_subset,
    )
    before = torch.get_num_threads()
    threads = row.get("threads")
    if isinstance(threads, (int, float)) and threads == threads and threads >= 1:
        torch.set_num_threads(int(threads))  # the trial's thread count: bit-identical result
    try:
        torch.manual_seed(record.seed)
        model = build_model(Architecture.from_dict(row["arch"]), space)
        result = train_proxy(model, splits.train, splits.val, proxy, seed=record.seed)
    finally:
        torch.set_num_threads(before)
    return model.state_dict(), result.val_acc


def retrain(
    store: Store,
    name: str,
    row: dict[str, Any],
    *,
    epochs: int = 60,
    out_dir: Path | None = None,
    threads: int | None = None,
) -> RetrainRecord:
    """Train trial ``row`` of search ``name`` from scratch on all training data; test it once."""
    search = store.search(name)
    space = record_space(search, name)
    proxy = ProxyConfig(**search.proxy)
    schedule = ProxyConfig(
        epochs=epochs, batch_size=proxy.batch_size, lr=proxy.lr, weight_decay=proxy.weight_decay
    )
    splits = load_dataset(
        search.dataset,
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
        data_dir=search.data_dir,
        val_fraction=proxy.val_fraction,
        seed=search.seed,
    )
    if splits.test is None:
        raise DatasetError(f"dataset {search.dataset!r} has no test split to report")
    # The full training split: the proxy's train and validation parts together.
    full = TensorDataset(
        *(torch.cat(pair) for pair in zip(splits.train.tensors, splits.val.tensors))
    )
    if threads:
        torch.set_num_threads(threads)
    arch = Architecture.from_dict(row["arch"])
    torch.manual_seed(search.seed)
    model = build_model(arch, space)
    trained = train_proxy(model, full, None, schedule, seed=search.seed)
    test_acc = evaluate_accuracy(model, splits.test)  # the one and only look at the test split

    out = Path(out_dir) if out_dir else default_out_dir(name, row["number"])
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "code": str(out / "model.py"),
        "weights": str(out / "model.pt"),
        "record": str(out / "result.json"),
    }
    write_export(
        arch,
        space,
        Path(files["code"]),
        meta={
            "search": name,
            "trial": int(row["number"]),
            "val_accuracy": row.get("val_acc"),
            "store_url": store.url,
            "note": f"retrained {epochs} epochs on all training data; test acc {test_acc:.4f}",
            "weights_file": "model.pt",
        },
        state_dict=model.state_dict(),
        weights=Path(files["weights"]),
    )
    record = RetrainRecord(
        search=name,
        trial=int(row["number"]),
        arch_id=arch.arch_id,
        arch=arch.to_dict(),
        arch_desc=arch.describe(),
        macs=int(row["macs"]),
        params=int(row["params"]),
        proxy_val_acc=row.get("val_acc"),
        epochs=epochs,
        train_samples=len(full),
        test_samples=len(splits.test),
        test_acc=test_acc,
        seconds=round(trained.seconds, 2),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        files=files,
    )
    Path(files["record"]).write_text(json.dumps(record.to_attr(), indent=2) + "\n")
    write_retrain(store.load_study(name), record)
    return record
