"""What every dataset reader shares: the space's input, argument checks, shaping and splitting."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fusion_nas.errors import DatasetError, allowed
from fusion_nas.model.space import INPUT_DIMS, INPUT_KINDS

KINDS: tuple[str, ...] = INPUT_KINDS
# the shape of ``size`` for each kind
SIZE_SHAPES: dict[str, str] = {"sequence": "(L,)", "image": "(H, W)", "video": "(T, H, W)"}
# Bytes per input value at the peak of loading float data: float32 held about four times (raw,
# normalised, split); generating the synthetic task also holds float64 noise and (N, H, W)
# temporaries. uint8 images need one byte per value, plus what resizing a chunk holds.
BYTES_PER_VALUE = 16
SYNTHETIC_BYTES_PER_VALUE = 48
UINT8_BYTES_PER_VALUE = 2


@dataclass(frozen=True)
class Space:
    """The input a search space expects: ``kind``, ``channels`` and ``size``: (L,) for a
    sequence, (H, W) for an image, (T, H, W) for a video (T frames of H x W)."""

    kind: str
    channels: int
    size: tuple[int, ...]

    def describe(self) -> str:
        """``image space with 3 channel(s) and size (32, 32)``, for messages."""
        return f"{self.kind} space with {self.channels} channel(s) and size {self.size}"


@dataclass(frozen=True)
class Raw:
    """A dataset in the space's shape, not yet normalised or split.

    ``x_train`` is float32 ``(N, C, *size)`` (normalised as a whole when loaded; video clips
    ``(N, C, T, H, W)`` always take this path) or uint8
    ``(N, C, H, W)`` pixels (normalised per batch, see :mod:`.images`); ``C`` may be 1 for grey
    images in a 3-channel space. ``natural``: photographs and the like, whose default
    augmentation is random crop and flip. ``skipped``: unreadable files left out.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    classes: int
    natural: bool = False
    skipped: int = 0


def check_int(what: str, value: object, minimum: int | None = None) -> None:
    """Refuse (one line) a ``value`` that is not an integer, or is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DatasetError(f"{what} {value!r} is not an integer")
    if minimum is not None and value < minimum:
        raise DatasetError(f"{what} {value!r} is too small; it must be >= {minimum}")


def check_fraction(value: object) -> None:
    """Refuse a validation fraction outside (0, 1)."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and 0 < value < 1):
        raise DatasetError(f"val_fraction {value!r} is out of range; it must be > 0 and < 1")


def check_space(kind: str, channels: int, size: tuple[int, ...]) -> Space:
    """The :class:`Space` of ``kind``, ``channels`` and ``size``; one line if they do not fit."""
    if kind not in KINDS:
        raise DatasetError(f"kind {kind!r} is not allowed; allowed: {allowed(KINDS)}")
    check_int("channels", channels, minimum=1)
    shape = SIZE_SHAPES[kind]
    dims = INPUT_DIMS[kind]
    try:
        size = tuple(size)
    except TypeError:
        size = (size,)
    if len(size) != dims or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size
    ):
        raise DatasetError(
            f"size {size!r} does not fit kind '{kind}'; it needs {dims} positive integer(s) {shape}"
        )
    return Space(kind, int(channels), tuple(int(s) for s in size))


def memory_bytes() -> int:
    """Physical memory of this machine (what loading a dataset may use at most)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX: no bound
        return 2**62


def check_fits(name: str, n: int, space: Space, per_value: int = BYTES_PER_VALUE) -> None:
    """Refuse ``n`` samples shaped for ``space`` that would not fit in memory (before loading)."""
    need = n * space.channels * math.prod(space.size) * per_value
    have = memory_bytes()
    if need > have:
        raise DatasetError(
            f"dataset '{name}' shaped for the {space.describe()} needs about "
            f"{need / 2**30:,.1f} GiB to load {n:,} samples; this machine has "
            f"{have / 2**30:,.1f} GiB; allowed: a smaller input size or fewer channels"
        )


def check_image_channels(name: str, c: int, space: Space) -> None:
    """Images of ``c`` channels fit the space: the same count, or grey for a 3-channel space."""
    if c != space.channels and not (c == 1 and space.channels == 3):
        raise DatasetError(
            f"dataset '{name}' holds {c}-channel images but the search space has "
            f"{space.channels} channels; allowed: {allowed((c, 3) if c == 1 else (c,))}"
        )


def need_image_space(name: str, space: Space, what: str) -> None:
    """Refuse a sequence or video space for a dataset of images (``what``: e.g. ``8x8
    images``)."""
    if space.kind != "image":
        raise DatasetError(
            f"dataset '{name}' holds {what} but the search space is kind "
            f"'{space.kind}'; use an image space (kind 'image', size (H, W))"
        )


def need_video_space(name: str, space: Space, what: str = "video clips (C, T, H, W)") -> None:
    """Refuse a sequence or image space for a dataset of video clips (``what``: its data)."""
    if space.kind != "video":
        raise DatasetError(
            f"dataset '{name}' holds {what} but the search space is kind "
            f"'{space.kind}'; use a video space (kind 'video', size (T, H, W))"
        )


def resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinear resize of float ``(N, C, H, W)`` to ``size``; antialiased only when shrinking."""
    # without antialias, shrinking aliases badly; when enlarging it changes nothing but is slower
    shrink = size[0] < x.shape[2] or size[1] < x.shape[3]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def resize_uint8(x: torch.Tensor, size: tuple[int, ...], chunk: int = 1024) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` resized to ``size`` (bilinear, as :func:`resize`), rounded back to
    uint8; ``chunk`` images at a time, so the float copy stays small."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], *size), dtype=torch.uint8)
    for i in range(0, len(x), chunk):
        part = resize(x[i : i + chunk].float(), size)  # (b, C, *size) in 0..255
        out[i : i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Replicate grey ``(N, 1, ...)`` to ``(N, channels, ...)``; other tensors pass unchanged."""
    if x.shape[1] == channels:
        return x
    return x.expand(-1, channels, *x.shape[2:]).contiguous()


def normalise_float(
    x_train: torch.Tensor, x_test: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-channel standardisation of float data with the training data's statistics.

    Works in place on the loaders' fresh tensors. The statistics come from all the training
    data (before the val split) so they do not depend on ``seed``; the test split never
    contributes.
    """
    dims = [0, *range(2, x_train.ndim)]  # every dim but channels
    std, mean = torch.std_mean(x_train, dim=dims, keepdim=True)  # (1, C, 1[, 1])
    std = std.clamp_min(1e-6)  # a constant channel stays finite
    # in place: the loaders hand over fresh tensors, and 60k images make copies costly
    if x_test is not None:
        x_test.sub_(mean).div_(std)
    return x_train.sub_(mean).div_(std), x_test


def split_indices(
    n: int, val_fraction: float, seed: int, train_subset: int | None, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded permutation of the n training rows: the first ``n_val`` are val, the rest train."""
    if n < 2:
        raise DatasetError(
            f"dataset '{name}' has {n} training sample(s); it needs at least 2 (train and val)"
        )
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    # numpy's seeded Generator: the same split on every platform and torch version
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    train_idx, val_idx = perm[n_val:], perm[:n_val]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]  # after the split: val does not change
    return train_idx, val_idx
