"""Proxy trainer: a short, seeded AdamW + cosine schedule run that scores an architecture.

The score is the accuracy on the *validation* split (carved from the training data); the test
split is never looked at here. With the same seed and thread count the result is bit-identical.
A non-finite loss or an exceeded time budget ends the run with :class:`TrialFailed`.

A run can stop after any epoch (``stop_after``) and go on later from the state it returns
(``resume``): the model, optimiser, schedule and shuffling generator are saved at the epoch
boundary, so 3 epochs, then 7 more, give the same weights and curve as 10 epochs at once.
Successive halving (:mod:`fusion_nas.search.fidelity`) trains this way; the schedule always spans
``config.epochs``, so a stopped run's curve is the start of the full run's curve.

Training runs on the model's device, or on ``device`` when given (``cpu``, ``cuda:N``, ``mps``;
see :mod:`fusion_nas.training.devices`). Any map-style :class:`~torch.utils.data.Dataset` of
``(x, y, ...)`` samples trains: a :class:`~torch.utils.data.TensorDataset` is moved to the
device once and its batches are cut from the moved tensors in the order a seeded ``DataLoader``
shuffles them (so a CPU run gives exactly what it gave before devices existed). Image datasets
(:class:`~fusion_nas.training.data.ImageDataset`) hold uint8 pixels: an
:class:`~fusion_nas.training.data.ArrayImages` that fits on the device is moved there once (on
a GPU, while it takes at most half the free memory) and its batches are gathered there in the
same order; every batch is normalised on the device. Any other dataset is read through a
``DataLoader`` shuffled by the same seeded generator (a folder's files decoded in its
workers), pinned and copied to a CUDA device without blocking. All draw the same order for the
same seed and length.

The augmentation of :class:`ProxyConfig` (:mod:`fusion_nas.training.augment`) is applied to
each batch on the device, from a generator of its own, so with augmentation off every number
is what it was before augmentation existed.

Precision (``ProxyConfig.precision``): ``fp32``, or autocast to ``bf16`` or ``fp16``; fp16
steps go through a gradient scaler (``torch.amp.GradScaler``), which skips a step whose
gradients overflowed and lowers its scale. ``channels_last`` puts a network with 2-D
convolutions and its image batches in ``torch.channels_last`` layout; ``compile`` trains
through ``torch.compile(model)`` (evaluation runs the plain model). Neither changes what a
score means, so a search may resume with them switched (see :meth:`ProxyConfig.fingerprint`).

This is the one training loop of the toolkit: a search trial's proxy run
(:func:`fusion_nas.evaluation.trainer.evaluate`), the final run and the baselines
(:class:`fusion_nas.training.protocol.TrainingProtocol`) and the weight-sharing supernet
(:func:`fusion_nas.search.supernet.train_supernet`, whose model samples a path in every training
``forward``) all train through :func:`train_proxy`.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import InitVar, asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from fusion_nas.errors import FusionNasError, TrialFailed
from fusion_nas.training.augment import BatchAugment, check_settings, parse_augment
from fusion_nas.training.data.images import ArrayImages, ImageDataset
from fusion_nas.training.devices import AUTOCAST_DTYPES, parse_precision

# Settings that change how fast a run goes, not what its score means: a search may resume with
# them switched, like --device.
THROUGHPUT_FIELDS = ("channels_last", "compile")


@dataclass(frozen=True)
class ProxyConfig:
    """Settings of the proxy training run (stored with every search)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-2  # benchmarks/proxy_fidelity.py: ranks MNIST-1D networks far better than 3e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    train_subset: int | None = None
    val_fraction: float = 0.2
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (autocast; fp16 with a gradient scaler)
    channels_last: bool = False  # 2-D conv networks and image batches in channels-last layout
    compile: bool = False  # train through torch.compile(model)
    # Augmentation (fusion_nas.training.augment): None is the dataset's default ("crop,flip"
    # for natural images, "none" otherwise); a search stores the value it settled on.
    augment: str | None = None
    crop_padding: int = 4
    cutout: int = 0  # side of the square cut out, pixels (0: off)
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup (0: off)
    label_smoothing: float = 0.0
    # The switch of older versions: `bf16=True` (a search stored before --precision, or the
    # deprecated --bf16) means precision "bf16". Not a field: never stored again.
    bf16: InitVar[bool | None] = None

    def __post_init__(self, bf16: bool | None = None) -> None:
        parse_precision(self.precision)
        if bf16:
            if self.precision not in ("fp32", "bf16"):
                raise FusionNasError(
                    f"--bf16 contradicts --precision {self.precision!r}; pass only "
                    "--precision (allowed: 'fp32', 'bf16', 'fp16')"
                )
            object.__setattr__(self, "precision", "bf16")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise FusionNasError(f"{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FusionNasError(
                f"learning rate must be positive, got {self.lr!r}; allowed: a finite number > 0"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise FusionNasError(
                f"weight decay must be 0 or more, got {self.weight_decay!r}; allowed: a finite "
                "number >= 0"
            )
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise FusionNasError(
                f"warmup epochs must be 0 or more, got {self.warmup_epochs!r}; allowed: a "
                "finite number >= 0"
            )
        if not 0 < self.val_fraction < 1:
            raise FusionNasError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.train_subset is not None and self.train_subset < 1:
            raise FusionNasError(f"train_subset must be positive, got {self.train_subset!r}")
        object.__setattr__(self, "augment", parse_augment(self.augment))
        check_settings(self.crop_padding, self.cutout, self.mixup, self.label_smoothing)

    def to_dict(self) -> dict:
        """Plain dict for the store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> ProxyConfig:
        """The settings of a stored dict: an older one's ``bf16`` flag read as its precision; a
        key it lacks (stored before the setting existed) takes :data:`STORED_DEFAULTS`' value,
        the one those searches trained with, else the field's default; unknown keys ignored."""
        known = {f.name for f in fields(cls)} | {"bf16"}
        return cls(**{**STORED_DEFAULTS, **{k: v for k, v in stored.items() if k in known}})

    def settled(self, dataset: str) -> ProxyConfig:
        """These settings with augmentation ``None`` replaced by ``dataset``'s default
        (:func:`~fusion_nas.training.augment.default_augment`): what a run on it trains with."""
        if self.augment is not None:
            return self
        from fusion_nas.training.augment import default_augment

        return replace(self, augment=default_augment(dataset))

    def fingerprint(self) -> dict[str, Any]:
        """What must match when a search resumes: every setting but the throughput switches
        (:data:`THROUGHPUT_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in THROUGHPUT_FIELDS}


# What a setting missing from a stored proxy (a search stored before it existed) means: how
# those searches trained. No augmentation: ``None`` (the dataset's default) would now add
# random crops and flips to an old search of natural images.
STORED_DEFAULTS: dict[str, object] = {
    "augment": "none",
    "crop_padding": 4,
    "cutout": 0,
    "mixup": 0.0,
    "label_smoothing": 0.0,
}


# The fewest optimiser steps a proxy run should take. Below it networks barely leave their
# initialisation and the scores rank nothing: a user's 480-image folder at 3 epochs of batch 128
# (12 steps) scored every network below chance, while 15 epochs of batch 32 scored 0.93-0.94.
# ``fusion-nas search`` (and ``run_search``, as a warning) says so before training.
MIN_PROXY_STEPS = 100


def proxy_steps(n_train: int, proxy: ProxyConfig) -> int:
    """Optimiser steps of one proxy run on ``n_train`` training samples (after the validation
    carve-out and ``train_subset``): ``ceil(n_train / batch_size) * epochs``; the last, smaller
    batch of an epoch is a step too."""
    return math.ceil(n_train / proxy.batch_size) * proxy.epochs


def steps_advice(n_train: int, proxy: ProxyConfig, minimum: int = MIN_PROXY_STEPS) -> dict:
    """A batch size (largest found, ``None`` if even batch 1 is short) and an epoch count that
    would each, alone, bring a proxy run on ``n_train`` samples to ``minimum`` steps."""
    per_epoch = math.ceil(minimum / proxy.epochs)  # batches an epoch needs at these epochs
    batch = n_train // per_epoch  # ceil(n_train / batch) >= n_train / batch >= per_epoch
    return {
        "batch_size": batch if batch >= 1 else None,
        "epochs": math.ceil(minimum / math.ceil(n_train / proxy.batch_size)),
    }


@dataclass
class TrainResult:
    """Outcome of one proxy run."""

    val_acc: float | None  # None when trained without a validation split
    curve: list[float] = field(default_factory=list)  # validation accuracy after each epoch
    seconds: float = 0.0
    state: bytes | None = None  # where a run stopped by ``stop_after`` goes on (train_proxy)
    data_seconds: float = 0.0  # of ``seconds``: fetching, moving, normalising, augmenting batches


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for an empty model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: Dataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (``(x, y, ...)`` samples) in eval mode.

    Runs on the model's device: a :class:`TensorDataset` is moved there at once, an
    :class:`~fusion_nas.training.data.ArrayImages` is read in order as uint8 slices and
    normalised there, any other dataset is read batch by batch through a ``DataLoader`` in its
    own order (pinned and copied without blocking on CUDA).
    """
    model.eval()
    device = model_device(model)
    correct, seen = 0, 0
    batches: Iterable[Sequence[torch.Tensor]]
    if isinstance(data, TensorDataset):
        x, y = (t.to(device) for t in data.tensors[:2])
        batches = (
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)
        )
    elif isinstance(data, ArrayImages):
        images = _resident(data, device)
        batches = (
            _normalised(images, *images.slice(i, i + batch_size), device)
            for i in range(0, len(images), batch_size)
        )
    else:
        batches = (_moved(data, batch, device) for batch in _loader(data, batch_size, None, device))
    for batch in batches:
        xb, yb = batch[0].to(device), batch[1].to(device)
        correct += (model(xb).argmax(dim=1) == yb).sum()
        seen += len(yb)
    return int(correct) / max(1, seen)


# Share of the free GPU memory a dataset may take to be moved there whole (the rest is for the
# network, its activations and the optimiser).
_RESIDENT_SHARE = 0.5


def _resident(data: ArrayImages, device: torch.device) -> ArrayImages:
    """``data`` on ``device`` when it fits (moved once, as uint8, and kept there for later
    trials), else as it is (batches are then gathered where it is and copied)."""
    if device.type == "cuda" and not data.on(device):
        free, _ = torch.cuda.mem_get_info(device)
        if data.nbytes > _RESIDENT_SHARE * free:
            return data
    return data.to(device)


def _normalised(
    images: ImageDataset, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw uint8 batch moved to ``device`` (no-op if there) and normalised there."""
    cuda = device.type == "cuda"
    if cuda and x.device.type == "cpu":
        x, y = x.pin_memory(), y.pin_memory()
    x, y = x.to(device, non_blocking=cuda), y.to(device, non_blocking=cuda)
    return images.normalise(x), y


def _loader(
    data: Dataset, batch_size: int, generator: torch.Generator | None, device: torch.device
) -> DataLoader:
    """A loader over ``data`` (shuffled by ``generator``, else in order): the raw uint8 samples
    of an :class:`ImageDataset` (decoded in its workers, if it has any), pinned on CUDA."""
    source = data.raw_view() if isinstance(data, ImageDataset) else data
    # a pool's worker process is daemonic and may not start loader workers
    workers = 0 if multiprocessing.current_process().daemon else getattr(data, "workers", 0)
    return DataLoader(
        source,
        batch_size=batch_size,
        shuffle=generator is not None,
        generator=generator,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )


def _moved(
    data: Dataset, batch: Sequence[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader's collated batch ``[x (B, ...), y (B,), ...]`` on ``device`` (normalised there
    when ``data`` is an :class:`ImageDataset`)."""
    if isinstance(data, ImageDataset):
        return _normalised(data, batch[0], batch[1], device)
    cuda = device.type == "cuda"
    return batch[0].to(device, non_blocking=cuda), batch[1].to(device, non_blocking=cuda)


def _batches(
    data: Dataset, batch_size: int, generator: torch.Generator, device: torch.device
) -> tuple[DataLoader, Callable[[Any], tuple[torch.Tensor, torch.Tensor]]]:
    """A loader that shuffles ``data`` with ``generator``, and what turns its batch into (x, y).

    A :class:`TensorDataset`, and an :class:`~fusion_nas.training.data.ArrayImages` that fits
    on the device, are moved to ``device`` once (the images as uint8); the loader shuffles
    sample indices exactly as a loader over ``data`` would (same sampler, same draws from
    ``generator``) and each batch is gathered on ``device``: (batch, *sample shape), images
    normalised there. Any other dataset is loaded and collated by the loader (in its workers,
    pinned on CUDA) and each batch moved to ``device`` without blocking.
    """
    if isinstance(data, (TensorDataset, ArrayImages)):
        if isinstance(data, TensorDataset):
            xs, ys = (t.to(device) for t in data.tensors[:2])  # moved once, not batch by batch
            images = None
        else:
            images = _resident(data, device)
        loader = DataLoader(
            range(len(data)), batch_size=batch_size, shuffle=True, generator=generator
        )

        def gather(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if images is None:
                index = index.to(device)
                return xs[index], ys[index]
            return _normalised(images, *images.batch(index.to(images.device)), device)

        return loader, gather
    loader = _loader(data, batch_size, generator, device)

    def move(batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return _moved(data, batch, device)  # [x (B, ...), y (B,), ...]

    return loader, move


def _has_conv2d(model: nn.Module) -> bool:
    """Whether ``model`` convolves in 2-D (channels-last helps only those)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero (multiplier of the base learning rate)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_proxy(
    model: nn.Module,
    train: Dataset,
    val: Dataset | None,
    config: ProxyConfig,
    *,
    seed: int = 0,
    timeout: float | None = None,
    on_epoch: Callable[[int, float | None], None] | None = None,
    device: torch.device | str | None = None,
    stop_after: int | None = None,
    resume: bytes | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` and return its validation accuracy per epoch and at the end.

    With ``val=None`` nothing is evaluated during training (the final retraining, which must not
    look at held-out data before it ends). ``device`` (None: where the model is) is where the
    model is moved and trained; it stays there afterwards.

    ``stop_after=E`` ends the run after epoch ``E`` of ``config.epochs`` (the schedule still
    spans them all) and returns its ``state``; ``resume=state`` goes on from there, and the
    curve returned then covers every epoch since the start.

    ``on_epoch(epoch, val_acc)`` is called after every epoch (0-based; ``None`` without
    ``val``), ``on_step(step, total, loss)`` after every optimiser step (1-based over the whole
    schedule of ``total`` steps).

    Raises :class:`TrialFailed` on a non-finite loss or when ``timeout`` seconds are exceeded
    (checked after every batch).
    """
    start = time.perf_counter()
    dev = torch.device(device) if device is not None else model_device(model)
    model.to(dev)
    channels_last = config.channels_last and _has_conv2d(model)
    if channels_last:  # NHWC weights: the layout tensor cores and oneDNN convolve fastest in
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if config.compile else model  # shares model's parameters
    dtype = AUTOCAST_DTYPES.get(config.precision)  # None: fp32, no autocast
    scaler = torch.amp.GradScaler(dev.type, enabled=config.precision == "fp16")
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same order on any device
    loader, to_device = _batches(train, config.batch_size, generator, dev)
    augment = BatchAugment.of(config, seed, _default_augment(train))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    warmup = min(total, max(1, round(config.warmup_epochs * len(loader))))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, warmup))
    curve: list[float] = []
    first = 0
    if resume is not None:  # saved at the end of epoch `first` by an earlier call
        saved = torch.load(io.BytesIO(resume), map_location=dev, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        generator.set_state(saved["generator"])
        if "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        if "augment" in saved:
            augment.set_state(saved["augment"])
        first, curve = saved["epoch"], list(saved["curve"])
    last = config.epochs if stop_after is None else min(stop_after, config.epochs)
    data_seconds = 0.0
    for epoch in range(first, last):
        model.train()
        fetched = time.perf_counter()
        for step, batch in enumerate(loader):
            x, y = to_device(batch)
            x, target = augment(x, y)  # as they were when no augmentation is on
            if channels_last and x.dim() == 4:  # (B, C, H, W) stored as (B, H, W, C)
                x = x.contiguous(memory_format=torch.channels_last)
            data_seconds += time.perf_counter() - fetched
            with torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = augment.loss(forward(x), target)
            if not torch.isfinite(loss):
                raise TrialFailed(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {step + 1}"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # scaled in fp16 only; otherwise loss.backward()
            scaler.step(opt)  # skipped when fp16 gradients overflowed; otherwise opt.step()
            scaler.update()
            sched.step()
            if on_step is not None:
                on_step(epoch * len(loader) + step + 1, total, loss.item())
            if timeout is not None and time.perf_counter() - start > timeout:
                raise TrialFailed(
                    f"timeout: trial exceeded {timeout:g} s (epoch {epoch + 1} of {config.epochs})"
                )
            fetched = time.perf_counter()
        acc = evaluate_accuracy(model, val) if val is not None else None
        if acc is not None:
            curve.append(acc)
        if on_epoch is not None:
            on_epoch(epoch, acc)
    final = curve[-1] if curve else None
    state = None
    if last < config.epochs:  # stopped early: keep what going on needs
        buffer = io.BytesIO()
        saved = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "generator": generator.get_state(),
            "augment": augment.state(),
            "epoch": last,
            "curve": curve,
        }
        if scaler.is_enabled():
            saved["scaler"] = scaler.state_dict()
        torch.save(saved, buffer)
        state = buffer.getvalue()
    return TrainResult(
        val_acc=final,
        curve=curve,
        seconds=time.perf_counter() - start,
        state=state,
        data_seconds=data_seconds,
    )


def _default_augment(data: Dataset) -> str:
    """The augmentation ``augment=None`` means for ``data``: crop and flip for natural images
    (an :class:`ImageDataset` of a folder or CIFAR), none otherwise."""
    return "crop,flip" if getattr(data, "natural", False) else "none"
