"""The one training protocol of searched networks and baselines: proxy score, then final run.

:class:`TrainingProtocol` holds it: the proxy run that scores a network on the validation part
carved from the training data, and the final run that trains from scratch on all training data
(train + validation) with a longer schedule and only then evaluates it on the test split, once.
It is the only code path that touches the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from fusion_nas.errors import DatasetError
from fusion_nas.model.space import SearchSpace
from fusion_nas.training.data import DataSplits, concat, dataset_for, load_dataset
from fusion_nas.training.loop import ProxyConfig, TrainResult, evaluate_accuracy, train_proxy

__all__ = ["RETRAIN_EPOCHS", "FinalResult", "TrainingProtocol", "all_training_data"]

RETRAIN_EPOCHS = 60  # default length of the final schedule (retrain and baselines)


def all_training_data(train: Dataset, val: Dataset) -> Dataset:
    """The full training split: the proxy's train and validation parts together (train first).

    Two :class:`TensorDataset` s are concatenated tensor by tensor (one dataset the loop moves
    to the device at once), two image datasets of one dataset by their rows or files (still
    uint8, normalised per batch); any other pair is a :class:`ConcatDataset`, the same samples
    in the same order.
    """
    if isinstance(train, TensorDataset) and isinstance(val, TensorDataset):
        return TensorDataset(*(torch.cat(pair) for pair in zip(train.tensors, val.tensors)))
    joined = concat(train, val)
    return joined if joined is not None else ConcatDataset([train, val])


@dataclass(frozen=True)
class FinalResult:
    """Outcome of the final training: test accuracy, once, after training on all data."""

    test_acc: float
    epochs: int
    train_samples: int
    test_samples: int
    seconds: float  # training time (the test evaluation not included)


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
        learning rate and weight decay, and the proxy's augmentation."""
        p = self.proxy

        def pick(final, proxy):
            return proxy if final is None else final

        return ProxyConfig(
            epochs=epochs,
            batch_size=pick(self.final_batch_size, p.batch_size),
            lr=pick(self.final_lr, p.lr),
            weight_decay=pick(self.final_weight_decay, p.weight_decay),
            precision=p.precision,  # the final run trains as the proxy did
            channels_last=p.channels_last,
            compile=p.compile,
            augment=p.augment,
            crop_padding=p.crop_padding,
            cutout=p.cutout,
            mixup=p.mixup,
            label_smoothing=p.label_smoothing,
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
        full = all_training_data(splits.train, splits.val)
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
