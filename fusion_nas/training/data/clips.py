"""``folder:PATH`` with a video space: real clips for kind ``"video"``.

Layout (the image folder's, with clips in place of images)::

    PATH/train/<class>/<clip>
    PATH/test/<class>/<clip>      (optional; the same class folders)

Class folders are found, sorted and checked as for images (:func:`.folder.class_trees`). A clip
is either

- a directory of frame images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``), frames in natural
  order of their file names (``frame_2`` before ``frame_10``), or
- a short video file: ``.gif`` (decoded by Pillow) or ``.mp4``, ``.avi``, ``.mov``, ``.webm``,
  ``.mkv`` (decoded by PyAV: ``pip install 'fusion-nas[video]'``).

Every frame is decoded, converted to grey (``L``) or RGB by the space's channels (grey frames
replicated, as for images), resized (bilinear) to the space's ``(H, W)`` and stacked to uint8
``(C, T, H, W)``. Every clip must have the same number of frames n: differing counts, or
n < the space's T, are refused in one line; for n > T the frames ``round(linspace(0, n - 1,
T))`` are kept (uniform over the clip). The clips are then float32 in [0, 1], held in memory
and normalised per channel like any float data (no decoded cache as for image folders yet: a
future step). A clip with an unreadable frame or video is skipped with one logged line and
counted in ``DataSplits.skipped``, as an unreadable image is.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from fusion_nas.errors import DatasetError, allowed, one_line
from fusion_nas.training.data.base import Raw, Space, check_fits, resize_uint8
from fusion_nas.training.data.folder import (
    FOLDER_PREFIX,
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    UnreadableImage,
    class_trees,
    decode,
)

__all__ = ["AV_SUFFIXES", "VIDEO_SUFFIXES", "clip_frames", "list_clips", "load_clips"]

GIF_SUFFIXES: tuple[str, ...] = (".gif",)
AV_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".webm", ".mkv")  # decoded by PyAV
VIDEO_SUFFIXES: tuple[str, ...] = GIF_SUFFIXES + AV_SUFFIXES
MAX_CLIP_FRAMES = 10_000  # frames decoded from one clip at most (a short clip, not a film)
PYAV_HINT = "reading video files needs PyAV: pip install 'fusion-nas[video]'"

log = logging.getLogger(__name__)


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a file name with its digit runs as numbers: ``frame_2`` < ``frame_10``."""
    return tuple((0, int(t)) if t.isdigit() else (1, t.lower()) for t in re.split(r"(\d+)", name))


def frame_files(clip: Path) -> list[Path]:
    """The frame images of a clip directory, in natural order of their names."""
    found = [p for p in clip.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda p: natural_key(p.name))


def list_clips(path: str, space: Space) -> tuple[Path, list[str], list[Path], np.ndarray, int]:
    """Check the folder's layout against ``space`` and list its clips (nothing decoded):
    ``(root, classes, clips, labels (N,) int64, n_train)``, training clips first."""
    name = FOLDER_PREFIX + path
    if space.kind != "video":
        raise DatasetError(
            f"dataset '{name}' read as clips needs a video space but the search space is kind "
            f"'{space.kind}'; use a video space (kind 'video', size (T, H, W))"
        )
    if space.channels not in (1, 3):
        raise DatasetError(
            f"dataset '{name}' reads grey or RGB clips but the search space has "
            f"{space.channels} channels; allowed: 1, 3"
        )
    root, classes, trees = class_trees(path, "<clip>")
    clips: list[Path] = []
    labels: list[int] = []
    n_train = 0
    for tree in trees:
        for label, class_name in enumerate(classes):
            folder = tree / class_name
            found = sorted(
                p
                for p in folder.iterdir()
                if not p.name.startswith(".")
                and (p.is_dir() or (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES))
            )
            if not found:
                images = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
                hint = f" (it holds images such as '{images[0]}')" if images else ""
                raise DatasetError(
                    f"class folder '{folder}' holds no clips{hint}; allowed: directories of frame "
                    f"images or video files {allowed(VIDEO_SUFFIXES)}"
                )
            clips += found
            labels += [label] * len(found)
        if tree is trees[0]:
            n_train = len(clips)
    return root, classes, clips, np.asarray(labels, dtype=np.int64), n_train


def _stack(frames: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """uint8 frames ``(C, h, w)`` (any sizes) -> uint8 ``(C, n, H, W)`` at ``size``."""
    resized = [
        f if f.shape[1:] == size else resize_uint8(torch.from_numpy(f)[None], size)[0].numpy()
        for f in frames
    ]
    return np.stack(resized, axis=1)


def _as_chw(pixels: np.ndarray) -> np.ndarray:
    """``(h, w)`` or ``(h, w, C)`` uint8 -> ``(C, h, w)``."""
    x = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.uint8)


def _check_frame(clip: Path, w: int, h: int) -> None:
    if w * h > MAX_IMAGE_PIXELS:
        raise DatasetError(
            f"clip '{clip}' has frames of {w}x{h} ({w * h:,} pixels), too large; "
            f"allowed: at most {MAX_IMAGE_PIXELS:,} pixels"
        )


def _count(clip: Path, n: int) -> None:
    if n >= MAX_CLIP_FRAMES:
        raise DatasetError(
            f"clip '{clip}' has more than {MAX_CLIP_FRAMES:,} frames; allowed: short clips "
            f"of at most {MAX_CLIP_FRAMES:,} frames"
        )


def _gif_frames(clip: Path, mode: str) -> list[np.ndarray]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(clip) as img:
            _check_frame(clip, *img.size)
            frames = []
            for frame in ImageSequence.Iterator(img):
                frames.append(_as_chw(np.array(frame.convert(mode), dtype=np.uint8)))
                _count(clip, len(frames))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as e:
        raise UnreadableImage(one_line(e, typed=False)) from e
    return frames


def _av_frames(clip: Path, mode: str) -> list[np.ndarray]:
    try:
        import av
    except ImportError:
        raise DatasetError(f"clip '{clip}': {PYAV_HINT}") from None
    fmt = "gray" if mode == "L" else "rgb24"
    frames = []
    try:
        with av.open(str(clip)) as container:
            if not container.streams.video:
                raise UnreadableImage("no video stream")
            for frame in container.decode(video=0):
                _check_frame(clip, frame.width, frame.height)
                frames.append(_as_chw(frame.to_ndarray(format=fmt)))
                _count(clip, len(frames))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise UnreadableImage(one_line(e, typed=False)) from e
    if not frames:
        raise UnreadableImage("no frames")
    return frames


def clip_frames(clip: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Every frame of ``clip`` (a frame directory or a video file) as uint8 ``(C, n, H, W)``
    at ``size`` (``mode``: ``"L"`` or ``"RGB"``).

    Raises :class:`~.folder.UnreadableImage` for a frame or video that cannot be decoded,
    :class:`DatasetError` for one that is too large or a video file without PyAV.
    """
    if clip.is_dir():
        files = frame_files(clip)
        if not files:
            raise UnreadableImage(f"no frame images {allowed(IMAGE_SUFFIXES)}")
        _count(clip, len(files))
        frames = []
        for f in files:
            try:
                frames.append(decode(f, mode, size))  # (C, H, W)
            except UnreadableImage as e:
                raise UnreadableImage(f"frame '{f.name}': {e}") from e
    elif clip.suffix.lower() in GIF_SUFFIXES:
        frames = _gif_frames(clip, mode)
    else:
        frames = _av_frames(clip, mode)
    return _stack(frames, size)  # (C, n, H, W)


def sample_frames(n: int, t: int) -> np.ndarray:
    """Indices of ``t`` frames spread uniformly over ``n >= t``: ``round(linspace(0, n-1, t))``."""
    return np.round(np.linspace(0, n - 1, t)).astype(np.int64)


def load_clips(path: str, space: Space) -> Raw:
    """The clip folder at ``path`` shaped for the video ``space`` (see the module's docstring):
    float32 ``(N, C, T, H, W)`` in [0, 1], ``C`` 1 or 3 by the space's channels."""
    name = FOLDER_PREFIX + path
    root, classes, clips, labels, n_train = list_clips(path, space)
    t, h, w = space.size
    check_fits(name, len(clips), space)
    mode = "L" if space.channels == 1 else "RGB"
    decoded: list[tuple[int, np.ndarray]] = []  # (clip index, (C, n, H, W) uint8)
    for i, clip in enumerate(clips):
        try:
            decoded.append((i, clip_frames(clip, mode, (h, w))))
        except UnreadableImage as e:
            log.warning("skipped unreadable clip '%s': %s", clip, e)
    skipped = len(clips) - len(decoded)
    if skipped:
        log.warning("folder dataset '%s': %d unreadable clip(s) skipped", root, skipped)
    if not any(i < n_train for i, _ in decoded):
        raise DatasetError(f"folder dataset '{root}' has no readable training clip")
    counts = Counter(x.shape[1] for _, x in decoded)
    common = counts.most_common(1)[0][0]
    for i, x in decoded:
        if x.shape[1] != common:
            raise DatasetError(
                f"clips have differing frame counts: {clips[i]} has {x.shape[1]} frames, the "
                f"others {common}; allowed: the same number of frames in every clip"
            )
    if common < t:
        raise DatasetError(
            f"clip {clips[decoded[0][0]]} has {common} frames but the search space's clips are "
            f"{t} frames long (T); allowed: clips of >= {t} frames or a space with size "
            f"T <= {common}"
        )
    keep = sample_frames(common, t)  # (T,)
    x = torch.from_numpy(np.stack([c[:, keep] for _, c in decoded]))  # (N, C, T, H, W) uint8
    y = torch.from_numpy(labels[[i for i, _ in decoded]])
    train = torch.tensor([i < n_train for i, _ in decoded])
    x = x.float().div_(255.0)  # float32 in [0, 1]
    has_test = bool((~train).any())
    return Raw(
        x_train=x[train],
        y_train=y[train],
        x_test=x[~train] if has_test else None,
        y_test=y[~train] if has_test else None,
        classes=len(classes),
        natural=True,
        skipped=skipped,
    )
