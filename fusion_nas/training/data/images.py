"""Image datasets held as uint8 pixels and normalised per batch, on the device that trains.

An :class:`ImageDataset` stores images as uint8 ``(N, C, H, W)`` (a quarter of float32) with its
training data's per-channel ``mean`` and ``std`` (statistics of ``pixels / 255``). A sample read
by index (``dataset[i]``) is normalised like before, ``((x / 255) - mean) / std`` as float32,
so any code that reads samples sees what it saw when datasets were float tensors. The training
loop instead fetches raw uint8 batches (:meth:`ImageDataset.raw`, :meth:`ArrayImages.batch`),
moves them to its device and normalises them there (:meth:`ImageDataset.normalise`): the same
float32 operations in the same order, so the numbers are bit-identical.

- :class:`ArrayImages`: pixels in memory or in a memory-mapped cache file; a split is a row
  index into them, never a copy.
- :class:`FolderImages`: image files decoded on demand (in ``DataLoader`` workers), for folders
  whose decoded pixels are not cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset, default_collate

__all__ = ["ArrayImages", "FolderImages", "ImageDataset", "pixel_stats", "take"]

# At most this many values get exact float32 statistics (torch.std_mean over the whole
# training data, as float datasets always had: Fashion-MNIST's 47M values keep their numbers);
# above it they are accumulated in float64 chunk by chunk, so memory stays bounded.
EXACT_STATS_VALUES = 2**26
_STATS_CHUNK = 4096  # images per chunk of the float64 statistics


def pixel_stats(
    pixels: torch.Tensor, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, std)``, each ``(1, C, 1, 1)`` float32, of ``pixels[rows] / 255``.

    ``pixels`` is uint8 ``(N, C, H, W)``; ``std`` is the unbiased standard deviation, clamped
    at 1e-6 so a constant channel stays finite.
    """
    n = len(pixels) if rows is None else len(rows)
    c = pixels.shape[1]
    if n * math.prod(pixels.shape[1:]) <= EXACT_STATS_VALUES:
        x = (pixels if rows is None else pixels[rows]).float().div_(255.0)  # (N, C, H, W)
        std, mean = torch.std_mean(x, dim=[0, 2, 3], keepdim=True)
        return mean, std.clamp_min(1e-6)
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for i in range(0, n, _STATS_CHUNK):
        index = slice(i, i + _STATS_CHUNK) if rows is None else rows[i : i + _STATS_CHUNK]
        part = pixels[index].to(torch.float64)  # (b, C, H, W) in 0..255
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = n * pixels.shape[2] * pixels.shape[3]
    mean = total / count
    var = (squares - count * mean.square()).clamp_min(0) / max(1, count - 1)
    shape = (1, c, 1, 1)
    mean32 = (mean / 255.0).float().reshape(shape)
    std32 = (var.sqrt() / 255.0).float().reshape(shape).clamp_min(1e-6)
    return mean32, std32


class ImageDataset(Dataset):
    """uint8 images with their label, normalised per batch (see the module's docstring).

    ``mean`` and ``std`` are ``(1, C, 1, 1)`` float32; ``channels`` is the space's channel
    count (grey ``C == 1`` images are replicated to it after normalising). ``natural`` marks
    photographs and the like (random crop and flip are their default augmentation);
    ``skipped`` counts unreadable files left out of the dataset.
    """

    natural: bool = False
    skipped: int = 0

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, channels: int) -> None:
        self.mean = mean
        self.std = std
        self.channels = channels
        self._stats_on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def raw(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` as stored: uint8 ``(C, H, W)`` and its int64 label."""
        raise NotImplementedError

    @property
    def labels(self) -> torch.Tensor:
        """Every label of the dataset in order, ``(N,)`` int64."""
        raise NotImplementedError

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> normalised float32 ``(B, channels, H, W)`` on x's device."""
        dev = x.device
        if dev not in self._stats_on:
            self._stats_on[dev] = (self.mean.to(dev), self.std.to(dev))
        mean, std = self._stats_on[dev]
        out = x.float().div_(255.0).sub_(mean).div_(std)
        if out.shape[1] != self.channels:  # grey -> the space's channels
            out = out.expand(-1, self.channels, *out.shape[2:]).contiguous()
        return out

    def raw_view(self) -> Dataset:
        """This dataset as a map of raw ``(uint8 (C, H, W), label)`` samples (for a loader)."""
        return _RawView(self)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.raw(index)
        return self.normalise(x[None])[0], y

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole dataset as ``(x float32 (N, channels, H, W), y (N,))``, like a
        ``TensorDataset``'s: 4 bytes a value; prefer :func:`take` for a part of it."""
        return take(self, torch.arange(len(self)))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stats_on"] = {}
        return state


class _RawView(Dataset):
    """The raw uint8 samples of an :class:`ImageDataset` (what a ``DataLoader`` collates)."""

    def __init__(self, images: ImageDataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images.raw(index)


class ArrayImages(ImageDataset):
    """Images held as one uint8 tensor (in memory, or a memory-mapped cache file).

    ``pixels`` is ``(M, C, H, W)`` uint8 and ``all_labels`` ``(M,)`` int64; ``rows`` (int64, or
    ``None`` for all) picks this dataset's samples out of them, so train, validation and test
    share one array. ``source`` is the cache file the pixels are mapped from: a pickled dataset
    then carries the path, and the process that unpickles it maps the same file.
    """

    def __init__(
        self,
        pixels: torch.Tensor,
        all_labels: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        channels: int,
        rows: torch.Tensor | None = None,
        *,
        natural: bool = False,
        skipped: int = 0,
        source: str | None = None,
    ) -> None:
        super().__init__(mean, std, channels)
        self.pixels = pixels
        self.all_labels = all_labels
        self.rows = rows
        self.natural = natural
        self.skipped = skipped
        self.source = source
        self._labels = all_labels if rows is None else all_labels[rows]
        self._moved: dict[str, ArrayImages] = {}  # copies on devices (see ``to``)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    @property
    def device(self) -> torch.device:
        """Where the pixels are."""
        return self.pixels.device

    @property
    def nbytes(self) -> int:
        """Bytes of this dataset's own pixels (its rows only)."""
        return len(self) * math.prod(self.pixels.shape[1:])

    def raw(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = index if self.rows is None else int(self.rows[index])
        return self.pixels[row], self._labels[index]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``index`` (on the pixels' device) as uint8 ``(B, C, H, W)`` and ``(B,)``."""
        rows = index if self.rows is None else self.rows[index]
        return self.pixels[rows], self._labels[index]

    def slice(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``start:stop`` in order (uint8 and labels), without an index tensor when the
        dataset is the whole array."""
        if self.rows is None:
            return self.pixels[start:stop], self._labels[start:stop]
        return self.batch(torch.arange(start, min(stop, len(self)), device=self.rows.device))

    def on(self, device: torch.device) -> bool:
        """Whether this dataset is on ``device`` already (its pixels, or a kept copy)."""
        return self.pixels.device == device or str(device) in self._moved

    def to(self, device: torch.device | str) -> ArrayImages:
        """This dataset with its own rows (only) on ``device``: ``self`` when already there.

        The copy is kept: every later trial and evaluation of this dataset in the process
        finds it there (one copy per device; the pixels stay uint8).
        """
        device = torch.device(device)
        if self.pixels.device == device or (device.type == "cpu" and self.device.type == "cpu"):
            return self
        moved = self._moved.get(str(device))
        if moved is None:
            pixels = self.pixels if self.rows is None else self.pixels[self.rows]
            moved = ArrayImages(
                pixels.to(device),
                self._labels.to(device),
                self.mean,
                self.std,
                self.channels,
                natural=self.natural,
                skipped=self.skipped,
            )
            self._moved[str(device)] = moved
        return moved

    def subset(self, index: torch.Tensor) -> ArrayImages:
        """The samples ``index`` of this dataset (rows into the same pixels)."""
        rows = index if self.rows is None else self.rows[index]
        return ArrayImages(
            self.pixels,
            self.all_labels,
            self.mean,
            self.std,
            self.channels,
            rows,
            natural=self.natural,
            skipped=self.skipped,
            source=self.source,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_moved"] = {}
        if self.source is not None:  # mapped from a cache file: the path travels, not the pixels
            state["pixels"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.pixels is None:
            from fusion_nas.training.data.cache import map_pixels

            self.pixels = map_pixels(Path(self.source))


class FolderImages(ImageDataset):
    """Image files decoded on demand, each resized to the space's size as uint8.

    ``files`` and ``labels`` list the samples; ``mode`` is Pillow's ``"L"`` or ``"RGB"``.
    Decoding happens in :meth:`raw`, so a ``DataLoader`` with workers spreads it over
    processes; ``workers`` is how many the training loop starts for it.
    """

    def __init__(
        self,
        files: Sequence[str],
        labels: torch.Tensor,
        mode: str,
        size: tuple[int, int],
        mean: torch.Tensor,
        std: torch.Tensor,
        channels: int,
        *,
        natural: bool = True,
        skipped: int = 0,
        workers: int = 0,
    ) -> None:
        super().__init__(mean, std, channels)
        self.files = list(files)
        self._labels = labels
        self.mode = mode
        self.size = size
        self.natural = natural
        self.skipped = skipped
        self.workers = workers

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    def raw(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from fusion_nas.training.data.folder import decode

        pixels = decode(Path(self.files[index]), self.mode, self.size)  # (C, H, W) uint8
        return torch.from_numpy(pixels), self._labels[index]

    def subset(self, index: torch.Tensor) -> FolderImages:
        """The samples ``index`` of this dataset."""
        picked = index.tolist()
        return FolderImages(
            [self.files[i] for i in picked],
            self._labels[index],
            self.mode,
            self.size,
            self.mean,
            self.std,
            self.channels,
            natural=self.natural,
            skipped=self.skipped,
            workers=self.workers,
        )


def take(data: Dataset, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``index`` of ``data`` as model inputs and labels, ``(x (B, ...), y (B,))``.

    A ``TensorDataset`` is indexed directly, an :class:`ArrayImages` gathers and normalises
    its uint8 rows, any other dataset is read sample by sample and collated.
    """
    if isinstance(data, TensorDataset):
        return data.tensors[0][index], data.tensors[1][index]
    if isinstance(data, ArrayImages):
        x, y = data.batch(index.to(data.device))
        return data.normalise(x), y
    batch = default_collate([data[int(i)] for i in index])
    return batch[0], batch[1]


def concat(a: Dataset, b: Dataset) -> Dataset | None:
    """``a`` then ``b`` as one dataset when both are :class:`ArrayImages` over the same pixels
    (rows joined, nothing copied); ``None`` otherwise."""
    if (
        isinstance(a, ArrayImages)
        and isinstance(b, ArrayImages)
        and a.pixels is b.pixels
        and a.rows is not None
        and b.rows is not None
    ):
        return ArrayImages(
            a.pixels,
            a.all_labels,
            a.mean,
            a.std,
            a.channels,
            torch.cat([a.rows, b.rows]),
            natural=a.natural,
            skipped=a.skipped,
            source=a.source,
        )
    if isinstance(a, FolderImages) and isinstance(b, FolderImages):
        return FolderImages(
            a.files + b.files,
            torch.cat([a.labels, b.labels]),
            a.mode,
            a.size,
            a.mean,
            a.std,
            a.channels,
            natural=a.natural,
            skipped=a.skipped,
            workers=a.workers,
        )
    return None
