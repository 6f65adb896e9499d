"""The training protocol shared by searched networks and baselines, and the final retraining.

:class:`TrainingProtocol` holds the one protocol: the proxy run that scores a network on the
validation part of the training data, and the final run that reports *test* accuracy.
``proxy_weights`` re-runs a trial's proxy training with the search's recorded seed and
settings (training is deterministic for a given seed and thread count) and checks that the
validation accuracy matches the stored one. ``retrain`` trains the architecture from scratch
on the full training split (train + validation) with a longer schedule and only then
evaluates it on the test split, once. It is the only code path that touches the test split.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import torch

from fusion_nas.deploy.export import write_export
from fusion_nas.model.arch import Architecture
from fusion_nas.model.build import build_model
from fusion_nas.model.space import SearchSpace, parse_space
from fusion_nas.settings import retrain_dir
from fusion_nas.store.queries import safe_filename
from fusion_nas.store.records import RetrainRecord, SearchRecord, write_retrain
from fusion_nas.store.store import Store
from fusion_nas.training.devices import device_name
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.training.protocol import RETRAIN_EPOCHS, TrainingProtocol


def record_space(record: SearchRecord, name: str) -> SearchSpace:
    """The search space a search ran on (its stored TOML, not today's file)."""
    return parse_space(record.space_toml, source=f"<space of {name}>")


def search_space(store: Store, name: str) -> SearchSpace:
    """The search space search ``name`` ran on (its stored TOML, not today's file)."""
    return record_space(store.search(name), name)


def default_out_dir(name: str, number: int) -> Path:
    """``<retrain dir>/<search>-trial<N>``: where ``retrain`` writes when no folder is given."""
    return retrain_dir() / f"{safe_filename(name)}-trial{int(number)}"


def search_protocol(record: SearchRecord, space: SearchSpace) -> TrainingProtocol:
    """The training protocol of a search: its dataset, proxy settings and seed."""
    return TrainingProtocol(
        dataset=record.dataset,
        space=space,
        proxy=ProxyConfig(**record.proxy),
        seed=record.seed,
        data_dir=record.data_dir,
    )


def proxy_weights(
    store: Store, name: str, row: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], float | None]:
    """Re-run the trial's proxy training; return its ``state_dict`` and validation accuracy.

    Uses the trial's recorded thread count: on a CPU the result depends on it.
    """
    record = store.search(name)
    space = record_space(record, name)
    protocol = search_protocol(record, space)
    arch = Architecture.from_dict(row["arch"])
    before = torch.get_num_threads()
    threads = row.get("threads")
    if isinstance(threads, (int, float)) and threads == threads and threads >= 1:
        torch.set_num_threads(int(threads))  # the trial's thread count: bit-identical result
    try:
        model, result = protocol.proxy_score(lambda: build_model(arch, space))
    finally:
        torch.set_num_threads(before)
    return model.state_dict(), result.val_acc


def retrain(
    store: Store,
    name: str,
    row: dict[str, Any],
    *,
    epochs: int = RETRAIN_EPOCHS,
    out_dir: Path | None = None,
    threads: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    weight_decay: float | None = None,
    device: str = "cpu",
) -> RetrainRecord:
    """Train trial ``row`` of search ``name`` from scratch on all training data; test it once.

    ``lr``, ``batch_size`` and ``weight_decay`` set the final schedule (None: the proxy's);
    ``device`` is where it trains (``cpu``, ``cuda:N``, ``mps``).
    """
    search = store.search(name)
    space = record_space(search, name)
    if threads:
        torch.set_num_threads(threads)
    arch = Architecture.from_dict(row["arch"])
    protocol = dataclasses.replace(
        search_protocol(search, space),
        final_lr=lr,
        final_batch_size=batch_size,
        final_weight_decay=weight_decay,
        device=device,
    )
    schedule = protocol.schedule(epochs)
    model, final = protocol.retrain(lambda: build_model(arch, space), epochs)
    test_acc = final.test_acc

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
        train_samples=final.train_samples,
        test_samples=final.test_samples,
        test_acc=test_acc,
        seconds=round(final.seconds, 2),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        files=files,
        lr=schedule.lr,
        batch_size=schedule.batch_size,
        weight_decay=schedule.weight_decay,
        device=device_name(device),
    )
    Path(files["record"]).write_text(json.dumps(record.to_attr(), indent=2) + "\n")
    write_retrain(store.load_study(name), record)
    return record
