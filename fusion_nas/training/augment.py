"""Data augmentation of a training batch on the device that trains, in plain torch.

Settings (fields of :class:`~fusion_nas.training.loop.ProxyConfig`, stored with every search):

- ``augment``: ``"crop,flip"``, ``"crop"``, ``"flip"`` or ``"none"``; ``None`` means the
  dataset's default (:func:`default_augment`): ``"crop,flip"`` for natural images (``folder:``,
  ``cifar10:``, ``cifar100:``), ``"none"`` for every other dataset (sequences, digits,
  synthetic, Fashion-MNIST). ``crop`` pads every image by ``crop_padding`` pixels of zeros (the
  channel mean, as images are normalised first) and cuts a random window of the original size;
  ``flip`` mirrors half the images left to right.
- ``cutout``: side in pixels of a square set to zero at a random centre of each image (0: off).
- ``mixup``: alpha of the Beta(alpha, alpha) weight that blends each batch with a shuffled copy
  of itself, labels blended alike (0: off).
- ``label_smoothing``: the cross-entropy's label smoothing (0: off).

Crop, flip and cutout are for images (kind ``image``) and video clips (kind ``video``: one crop,
flip and cutout per clip, the same in every frame); mixup and label smoothing fit any data.
All random draws come from one numpy generator seeded by the run's seed (separate from the
shuffling generator, which therefore draws what it always drew), a few numbers per sample;
the images themselves are transformed as one batch on their device, never sample by sample in
Python. The same seed gives the same batches on any device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fusion_nas.errors import FusionNasError, allowed

__all__ = [
    "AUGMENTS",
    "AugmentError",
    "BatchAugment",
    "check_augment",
    "default_augment",
    "parse_augment",
]

AUGMENTS: tuple[str, ...] = ("crop", "flip")  # the spatial transforms ``augment`` may list
AUGMENT_FORMS: tuple[str, ...] = ("crop,flip", "crop", "flip", "none")
_SEED_SALT = 0x61756700  # the augmentation generator's seed differs from the shuffling one


class AugmentError(FusionNasError):
    """An augmentation setting is malformed or does not fit the data."""


def parse_augment(value: str | None) -> str | None:
    """``value`` in canonical form (``"crop,flip"``, ``"crop"``, ``"flip"``, ``"none"``), or
    ``None`` (the dataset's default; ``"auto"`` means the same); one line if malformed."""
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "auto":
        return None
    if text in ("none", "off"):
        return "none"
    parts = [p.strip() for p in text.split(",")] if text else []
    if parts and all(p in AUGMENTS for p in parts):
        return ",".join(a for a in AUGMENTS if a in parts)
    raise AugmentError(
        f"augment {value!r} is not allowed; allowed: {allowed(('auto', *AUGMENT_FORMS))}"
    )


def default_augment(dataset: str) -> str:
    """The augmentation of ``dataset`` when none is asked for: ``"crop,flip"`` for natural
    images (``folder:``, ``cifar10:``, ``cifar100:``), ``"none"`` otherwise."""
    from fusion_nas.training.data import is_natural

    return "crop,flip" if is_natural(dataset) else "none"


def check_augment(settings: Any, kind: str) -> None:
    """Refuse (one line) image transforms on sequences: ``settings`` has the ProxyConfig fields
    ``augment`` and ``cutout``; ``kind`` is ``"image"``, ``"video"`` (frames are images) or
    ``"sequence"``."""
    if kind in ("image", "video"):
        return
    asked = []
    if settings.augment not in (None, "none"):
        asked.append(f"--augment {settings.augment}")
    if settings.cutout:
        asked.append(f"--cutout {settings.cutout}")
    if asked:
        raise AugmentError(
            f"{' and '.join(asked)} transforms images, but the data is kind '{kind}'; allowed "
            "for sequences: --augment none, --cutout 0 (--mixup and --label-smoothing fit any "
            "data)"
        )


@dataclass
class Mixed:
    """Labels of a mixup batch: ``lam * loss(y) + (1 - lam) * loss(y_other)``."""

    y: torch.Tensor
    y_other: torch.Tensor
    lam: float


class BatchAugment:
    """The augmentation of one training run; call it on each batch ``(x, y)``.

    ``x`` is normalised ``(B, C, H, W)``, video ``(B, C, T, H, W)`` (every frame of a clip
    cropped, flipped and cut out alike) or ``(B, C, L)`` (mixup only) on its device; returns
    the augmented ``x`` and the target for :meth:`loss` (``y``, or :class:`Mixed`).
    """

    def __init__(
        self,
        seed: int,
        *,
        crop: bool = False,
        flip: bool = False,
        crop_padding: int = 4,
        cutout: int = 0,
        mixup: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        self.crop, self.flip, self.padding = crop, flip, crop_padding
        self.cutout, self.mixup, self.label_smoothing = cutout, mixup, label_smoothing
        self.rng = np.random.default_rng([abs(int(seed)), int(seed < 0), _SEED_SALT])

    @classmethod
    def of(cls, config: Any, seed: int, default: str = "none") -> BatchAugment:
        """The augmentation asked for by ``config`` (a ProxyConfig); ``default`` stands for
        ``config.augment=None``."""
        spatial = parse_augment(config.augment) or default
        return cls(
            seed,
            crop="crop" in spatial and config.crop_padding > 0,
            flip="flip" in spatial,
            crop_padding=config.crop_padding,
            cutout=config.cutout,
            mixup=config.mixup,
            label_smoothing=config.label_smoothing,
        )

    @property
    def transforms(self) -> bool:
        """Whether the batches are changed at all (else :meth:`__call__` returns them as they
        are and draws nothing)."""
        return self.crop or self.flip or self.cutout > 0 or self.mixup > 0

    @property
    def spatial(self) -> bool:
        """Whether an image-only transform (crop, flip, cutout) is on."""
        return self.crop or self.flip or self.cutout > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if not self.transforms:
            return x, y
        if self.spatial and x.ndim not in (4, 5):
            raise AugmentError(
                f"crop, flip and cutout transform images (B, C, H, W) and clips (B, C, T, H, W), "
                f"not inputs of shape {tuple(x.shape)}; allowed for sequences: mixup and label "
                "smoothing"
            )
        b, shape = x.shape[0], x.shape
        if self.spatial and x.ndim == 5:
            # (B, C*T, H, W): frames as channels, so each clip's draws apply to all its frames
            x = x.reshape(b, -1, *shape[3:])
        if self.crop or self.flip:  # one pass: the window's columns run backwards when flipped
            offsets = (
                self._draw(self.rng.integers, b, 2 * self.padding + 1, x) if self.crop else None
            )
            flips = self._draw(self.rng.integers, b, 2, x).bool() if self.flip else None
            x = crop_flip(x, self.padding if self.crop else 0, offsets, flips)
        if self.cutout > 0:
            x = cut_out(x, self.cutout, self._draw(self.rng.random, b, 2, x, floating=True))
        x = x.reshape(shape)  # clips back to (B, C, T, H, W); a no-op otherwise
        if self.mixup > 0:
            lam = float(self.rng.beta(self.mixup, self.mixup))
            perm = torch.from_numpy(self.rng.permutation(b)).to(x.device, non_blocking=True)
            x = x.mul(lam).add_(x[perm], alpha=1.0 - lam)
            return x, Mixed(y, y[perm], lam)
        return x, y

    def _draw(
        self, fn: Any, b: int, high: int, x: torch.Tensor, floating: bool = False
    ) -> torch.Tensor:
        """``b`` draws (``(2, b)`` for crops and cutouts) on x's device."""
        if floating:
            values = fn((high, b))  # (2, B) uniform in [0, 1)
        elif high == 2:
            values = fn(0, 2, b)  # (B,) coin flips
        else:
            values = fn(0, high, (2, b))  # (2, B) offsets
        return torch.from_numpy(np.asarray(values)).to(x.device, non_blocking=True)

    def loss(self, logits: torch.Tensor, target: Any) -> torch.Tensor:
        """Cross-entropy of ``logits`` against ``target`` (labels, or :class:`Mixed`), with
        label smoothing."""
        ls = self.label_smoothing
        if isinstance(target, Mixed):
            a = F.cross_entropy(logits, target.y, label_smoothing=ls)
            b = F.cross_entropy(logits, target.y_other, label_smoothing=ls)
            return a * target.lam + b * (1.0 - target.lam)
        if ls:
            return F.cross_entropy(logits, target, label_smoothing=ls)
        return F.cross_entropy(logits, target)

    def state(self) -> Mapping[str, Any]:
        """What :meth:`set_state` needs to go on drawing where this run stopped."""
        return self.rng.bit_generator.state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Go on from a :meth:`state`."""
        self.rng.bit_generator.state = dict(state)


def crop_flip(
    x: torch.Tensor, padding: int, offsets: torch.Tensor | None, flips: torch.Tensor | None
) -> torch.Tensor:
    """Random crop and horizontal flip of ``x`` (B, C, H, W) in two gathers, no Python loop.

    The crop pads with ``padding`` zeros per side and cuts the (H, W) window at ``offsets``
    (2, B) = (top, left) in ``[0, 2 * padding]`` (``None``: no crop); the images where
    ``flips`` (B,) is true are then mirrored left to right (``None``: none), by reading the
    window's columns backwards.
    """
    b, c, h, w = x.shape
    if offsets is not None and padding > 0:
        x = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
        rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (B, H)
        x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
        left = offsets[1][:, None]  # (B, 1)
    else:
        left = torch.zeros(b, 1, dtype=torch.long, device=x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)  # (B, W)
    if flips is not None:
        cols = torch.where(flips[:, None], w - 1 - cols, cols)
    return x.gather(3, (left + cols)[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)


def random_crop(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Pad ``x`` (B, C, H, W) with ``padding`` zeros per side and cut the (H, W) window at
    ``offsets`` (2, B) = (top, left) in ``[0, 2 * padding]``."""
    return crop_flip(x, padding, offsets, None)


def flip_some(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Mirror left to right the images of ``x`` (B, C, H, W) where ``which`` (B,) is true."""
    return crop_flip(x, 0, None, which)


def cut_out(x: torch.Tensor, side: int, centres: torch.Tensor) -> torch.Tensor:
    """Zero a ``side`` x ``side`` square of each image of ``x`` (B, C, H, W), centred at
    ``centres`` (2, B) in [0, 1) of the height and width (clipped at the borders)."""
    _, _, h, w = x.shape
    top = (centres[0] * h).long() - side // 2  # (B,)
    left = (centres[1] * w).long() - side // 2
    r = torch.arange(h, device=x.device)[None, :]  # (1, H)
    c = torch.arange(w, device=x.device)[None, :]
    in_rows = (r >= top[:, None]) & (r < top[:, None] + side)  # (B, H)
    in_cols = (c >= left[:, None]) & (c < left[:, None] + side)  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return x.masked_fill(mask[:, None], 0.0)


def check_settings(crop_padding: int, cutout: int, mixup: float, label_smoothing: float) -> None:
    """Refuse (one line) out-of-range numbers of the augmentation settings."""
    for name, value in (("crop_padding", crop_padding), ("cutout", cutout)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AugmentError(f"{name} must be a whole number of pixels >= 0, got {value!r}")
    if isinstance(mixup, bool) or not (
        isinstance(mixup, (int, float)) and math.isfinite(mixup) and mixup >= 0
    ):
        raise AugmentError(f"mixup alpha must be a finite number >= 0 (0: off), got {mixup!r}")
    if isinstance(label_smoothing, bool) or not (
        isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1
    ):
        raise AugmentError(
            f"label_smoothing must be >= 0 and < 1 (0: off), got {label_smoothing!r}"
        )
