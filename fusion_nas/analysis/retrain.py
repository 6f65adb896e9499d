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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from fusion_nas.deploy.export import write_export
from fusion_nas.errors import DatasetError
from fusion_nas.evaluation.trainer import dataset_for
from fusion_nas.model.arch import Architecture
from fusion_nas.model.build import build_model
from fusion_nas.model.space import SearchSpace, parse_space
from fusion_nas.settings import retrain_dir
from fusion_nas.store.queries import safe_filename
from fusion_nas.store.records import RetrainRecord, SearchRecord, write_retrain
from fusion_nas.store.store import Store
from fusion_nas.training.data import DataSplits, load_dataset
from fusion_nas.training.devices import device_name
from fusion_nas.training.loop import ProxyConfig, TrainResult, evaluate_accuracy, train_proxy

RETRAIN_EPOCHS = 60  # default length of the final schedule (retrain and baselines)


@dataclass(frozen=True)
class FinalResult:
    """Outcome of the final training: test accuracy, once, after training on all data."""

    test_acc: float
    epochs: int
    train_samples: int
    test_samples: int
    seconds: float  # training time (the test evaluation not included)


def record_space(record: SearchRecord, name: str) -> SearchSpace:
    """The search space a search ran on (its stored TOML, not today's file)."""
    return parse_space(record.space_toml, source=f"<space of {name}>")


def search_space(store: Store, name: str) -> SearchSpace:
    """The search space search ``name`` ran on (its stored TOML, not today's file)."""
    return record_space(store.search(name), name)


def default_out_dir(name: str, number: int) -> Path:
    """``<retrain dir>/<search>-trial<N>``: where ``retrain`` writes when no folder is given."""
    return retrain_dir() / f"{safe_filename(name)}-trial{int(number)}"


@dataclass(frozen=True)
class TrainingProtocol:
    """The one training protocol of searched networks and baselines on one dataset.

    ``proxy_score`` is a search trial's proxy run (train on the train part, score on the
    validation part carved from the training data, with the search's seed and proxy settings);
    ``retrain`` is the final run (train from scratch on train + validation for ``epochs`` with the
    proxy's batch size, learning rate and weight decay, then evaluate on the test split once).
    Both seed the weights with ``seed`` before building the model, so a network built by
    ``build`` starts from the same weights in both runs.
    """

    dataset: str
    space: SearchSpace
    proxy: ProxyConfig
    seed: int = 0
    data_dir: str | None = None
    # The final schedule's settings; None: the proxy's (a longer run at a higher learning rate
    # often ranks and scores small networks better; see benchmarks/front_vs_baselines.py).
    final_lr: float | None = None
    final_batch_size: int | None = None
    final_weight_decay: float | None = None
    # Where both runs train ("cpu", "cuda:N", "mps"; see fusion_nas.training.devices). The trained
    # model
    # comes back on the CPU either way.
    device: str = "cpu"

    def proxy_splits(self) -> DataSplits:
        """The train/validation split of the proxy run (cached per process, like a search's)."""
        p = self.proxy
        return dataset_for(
            self.dataset,
            self.space.source,
            self.data_dir,
            p.val_fraction,
            self.seed,
            p.train_subset,
        )

    def proxy_score(
        self,
        build: Callable[[], nn.Module],
        *,
        on_epoch: Callable[[int, float | None], None] | None = None,
    ) -> tuple[nn.Module, TrainResult]:
        """Seed, build and proxy-train a model; its validation accuracy is the search's score.

        Reads the training data only: the validation part is carved from it.
        """
        splits = self.proxy_splits()
        train, val = splits.train, splits.val
        torch.manual_seed(self.seed)  # same seed -> same initial weights for the same network
        model = build()
        result = train_proxy(
            model, train, val, self.proxy, seed=self.seed, on_epoch=on_epoch, device=self.device
        )
        return model.cpu(), result

    def schedule(self, epochs: int) -> ProxyConfig:
        """The final schedule: ``epochs`` with the final (else the proxy's) batch size,
        learning rate and weight decay."""
        p = self.proxy

        def pick(final, proxy):
            return proxy if final is None else final

        return ProxyConfig(
            epochs=epochs,
            batch_size=pick(self.final_batch_size, p.batch_size),
            lr=pick(self.final_lr, p.lr),
            weight_decay=pick(self.final_weight_decay, p.weight_decay),
        )

    def retrain(
        self,
        build: Callable[[], nn.Module],
        epochs: int = RETRAIN_EPOCHS,
        *,
        on_epoch: Callable[[int, float | None], None] | None = None,
    ) -> tuple[nn.Module, FinalResult]:
        """Train from scratch on all training data (train + validation), then test once.

        The only code path that reads the test split, and only after training has ended.
        """
        schedule = self.schedule(epochs)
        splits = load_dataset(
            self.dataset,
            kind=self.space.kind,
            channels=self.space.channels,
            size=self.space.size,
            classes=self.space.classes,
            data_dir=self.data_dir,
            val_fraction=self.proxy.val_fraction,
            seed=self.seed,
        )
        # The full training split: the proxy's train and validation parts together.
        full = TensorDataset(
            *(torch.cat(pair) for pair in zip(splits.train.tensors, splits.val.tensors))
        )
        if splits.test is None:  # before training: do not train for nothing
            raise DatasetError(f"dataset {self.dataset!r} has no test split to report")
        torch.manual_seed(self.seed)
        model = build()
        trained = train_proxy(
            model, full, None, schedule, seed=self.seed, on_epoch=on_epoch, device=self.device
        )
        test = splits.test
        test_acc = evaluate_accuracy(model, test)  # the one and only look at the test split
        model.cpu()
        result = FinalResult(
            test_acc=test_acc,
            epochs=epochs,
            train_samples=len(full),
            test_samples=len(test),
            seconds=trained.seconds,
        )
        return model, result


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
