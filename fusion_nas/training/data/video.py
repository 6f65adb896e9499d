"""``video-glyphs``: a procedural video dataset in which time matters (in the spirit of MNIST-1D).

Every clip is one channel, ``T`` frames of ``H x W`` float32 pixels (default 8 x 16 x 16). Three
fixed 5x5 glyphs (:data:`GLYPHS`: 0 plus, 1 ring, 2 diagonal bar) appear one after another; the
class is the ORDER in which they appear, one of the 6 permutations in lexicographic order
(:data:`ORDERS`)::

    class 0: plus, ring, bar     class 3: ring, bar, plus
    class 1: plus, bar, ring     class 4: bar, plus, ring
    class 2: ring, plus, bar     class 5: bar, ring, plus

Timeline: the T frames are cut into 3 consecutive slots by a composition of T into 3 parts drawn
uniformly among those whose parts are >= 1 frame (>= 2 when T >= 6), independently of the class;
slot i shows glyph ``ORDERS[class][i]``. In its slot a glyph moves in a straight line from a
random start (top-left corner uniform in the frame) with a random integer velocity in {-1, 0, 1}
pixels per frame on each axis, clipped so that it stays inside the frame; its pixels add a
contrast drawn per slot, uniform in [0.4, 1]. So that a network must tell the shapes apart, a
2x2 distractor square (contrast: the clip's mean glyph contrast) random-walks through every
frame of every clip. Each clip gets a random background offset (uniform in [-0.5, 0.5]) and
every pixel Gaussian noise (sigma 0.4).

Why a network that averages frames stays at chance (1/6): the composition is exchangeable (the
uniform law over compositions is symmetric in its parts) and drawn independently of the class;
starts, velocities, contrasts, the distractor, offset and noise are drawn independently of
the class, and the per-slot draws are independent and identically distributed over slots.
So for every class the triple (frames of the plus, frames of the ring, frames of the bar) has
the law of (L1, L2, L3), and given its frame count each glyph's trajectory has the same law.
The multiset of frames of a clip, and therefore its frame average (or any other function that
ignores frame order: max over time, a bag of frames), has the same distribution for every class.
Only the order of the frames tells the classes apart; :func:`shuffle_frames` (each clip's frames
in a seeded random order) makes a copy in which no network can beat chance.

The data is fixed: 6000 training clips (1000 per class) and 1200 test clips (200 per class),
generated from :data:`DATA_SEED` (the same on every machine for a size); the validation split
is drawn by the loader's ``seed`` as for every dataset. Generation is vectorised numpy (well
under 2 s at the default size) and kept in memory per size.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch

from fusion_nas.errors import DatasetError
from fusion_nas.training.data.base import (
    SYNTHETIC_BYTES_PER_VALUE,
    Raw,
    Space,
    check_fits,
    check_image_channels,
    check_int,
    need_video_space,
)

__all__ = [
    "DATA_SEED",
    "DEFAULT_SIZE",
    "GLYPHS",
    "MIN_SIZE",
    "N_TEST",
    "N_TRAIN",
    "ORDERS",
    "VIDEO_GLYPHS",
    "load_video_glyphs",
    "make_video_glyphs",
    "shuffle_frames",
]

VIDEO_GLYPHS = "video-glyphs"
# 5x5 binary bitmaps, clearly distinct: a plus, a ring (hollow square), a diagonal bar
GLYPHS: np.ndarray = np.array(
    [
        [
            [0, 0, 1, 0, 0],
            [0, 0, 1, 0, 0],
            [1, 1, 1, 1, 1],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 0, 0],
        ],
        [
            [1, 1, 1, 1, 1],
            [1, 0, 0, 0, 1],
            [1, 0, 0, 0, 1],
            [1, 0, 0, 0, 1],
            [1, 1, 1, 1, 1],
        ],
        [
            [1, 0, 0, 0, 0],
            [0, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 0, 1],
        ],
    ],
    dtype=np.float32,
)  # (3, 5, 5)
GLYPHS.setflags(write=False)
GLYPH_NAMES: tuple[str, ...] = ("plus", "ring", "bar")
ORDERS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(3)))  # class -> order
_ORDERS = np.array(ORDERS, dtype=np.int64)  # (6, 3)
_G = GLYPHS.shape[1]  # glyph side, 5
MIN_SIZE: tuple[int, int, int] = (3, _G + 2, _G + 2)  # (T, H, W): 3 slots; glyph plus margin
DEFAULT_SIZE: tuple[int, int, int] = (8, 16, 16)
N_TRAIN, N_TEST = 6000, 1200  # 1000 / 200 per class
DATA_SEED = 20261207  # fixed: the same clips in every process and on every machine
# Difficulty, measured (benchmarks/video_glyphs.py): with sigma 0.25, full contrast and no
# distractor a small 3-D CNN reached 100% test accuracy in 8 epochs; these settings leave room
# between architectures (about 74% after 2 epochs, 84% after 4, on 3000 clips).
NOISE_SIGMA = 0.4
OFFSET_RANGE = 0.5  # background offset uniform in [-0.5, 0.5] per clip
CONTRAST = (0.4, 1.0)  # a glyph's pixels add a contrast uniform in this range, drawn per slot
DISTRACTOR = 2  # side of a square that wanders through every frame of every clip (0: none)


def check_video_size(size: tuple[int, ...]) -> tuple[int, int, int]:
    """``size`` as ``(T, H, W)``; one line if it is not 3 integers >= :data:`MIN_SIZE`."""
    try:
        dims = tuple(size)
    except TypeError:
        dims = (size,)
    if len(dims) != 3:
        raise DatasetError(
            f"dataset '{VIDEO_GLYPHS}' size {size!r} is not (T, H, W); allowed: 3 integers "
            f">= {MIN_SIZE}"
        )
    for what, value, low in zip(("T", "H", "W"), dims, MIN_SIZE):
        check_int(f"dataset '{VIDEO_GLYPHS}' size {what}", value)
        if value < low:
            raise DatasetError(
                f"dataset '{VIDEO_GLYPHS}' size {what}={value} is too small; it must be >= {low} "
                f"(3 glyph slots, a {_G}x{_G} glyph plus a 1-pixel margin), i.e. size >= {MIN_SIZE}"
            )
    return int(dims[0]), int(dims[1]), int(dims[2])


def _slot_lengths(rng: np.random.Generator, n: int, t: int) -> np.ndarray:
    """``(n, 3)`` slot lengths: uniform compositions of ``t`` into 3 parts, each >= 1 frame
    (>= 2 when ``t >= 6``)."""
    least = 2 if t >= 6 else 1
    m = t - 3 * (least - 1)  # compositions of m into parts >= 1 <-> 2 cut points in 1..m-1
    cuts = np.sort(rng.random((n, m - 1)).argsort(axis=1)[:, :2] + 1, axis=1)  # (n, 2)
    parts = np.stack([cuts[:, 0], cuts[:, 1] - cuts[:, 0], m - cuts[:, 1]], axis=1)
    return parts + (least - 1)  # (n, 3)


def make_video_glyphs(
    n: int, size: tuple[int, int, int] = DEFAULT_SIZE, seed: int = DATA_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips of the video-glyphs task (see the module's docstring) drawn from ``seed``.

    Returns ``x`` float32 ``(n, 1, T, H, W)`` and ``y`` int64 ``(n,)`` in 0..5, balanced
    (``n // 6`` or one more per class, shuffled). The same ``(n, size, seed)`` gives the same
    arrays on every machine.
    """
    check_int("n", n, minimum=1)
    check_int("seed", seed)
    t, h, w = check_video_size(size)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(ORDERS)).astype(np.int64)  # (n,) balanced
    lengths = _slot_lengths(rng, n, t)  # (n, 3)
    ends = lengths.cumsum(axis=1)  # (n, 3); ends[:, 2] == t
    starts = ends - lengths
    frame = np.arange(t)  # (T,)
    slot = (frame >= ends[:, :1]).astype(np.int64) + (frame >= ends[:, 1:2])  # (n, T) in 0..2
    tau = frame - np.take_along_axis(starts, slot, axis=1)  # (n, T) frames since slot start
    glyph = np.take_along_axis(_ORDERS[y], slot, axis=1)  # (n, T) glyph shown per frame
    # per clip and slot: top-left start and integer velocity, drawn independently of the class
    top0 = rng.integers(0, h - _G + 1, (n, 3))
    left0 = rng.integers(0, w - _G + 1, (n, 3))
    v = rng.integers(-1, 2, (2, n, 3))  # (2, n, 3) rows, columns per frame
    top = np.take_along_axis(top0, slot, 1) + np.take_along_axis(v[0], slot, 1) * tau
    left = np.take_along_axis(left0, slot, 1) + np.take_along_axis(v[1], slot, 1) * tau
    top, left = np.clip(top, 0, h - _G), np.clip(left, 0, w - _G)  # (n, T) inside the frame
    contrast = rng.uniform(*CONTRAST, (n, 3)).astype(np.float32)  # (n, 3) per slot
    offset = rng.uniform(-OFFSET_RANGE, OFFSET_RANGE, n).astype(np.float32)  # (n,)
    x = rng.standard_normal((n, t, h, w), dtype=np.float32)  # (n, T, H, W)
    x *= np.float32(NOISE_SIGMA)
    x += offset[:, None, None, None]
    # one 5x5 glyph per frame: 25 distinct pixels per (clip, frame), so `+=` adds each once
    k = np.arange(_G)
    rows = top[:, :, None, None] + k[:, None]  # (n, T, 5, 1)
    cols = left[:, :, None, None] + k[None, :]  # (n, T, 1, 5)
    amp = np.take_along_axis(contrast, slot, 1)[:, :, None, None]  # (n, T, 1, 1)
    clip_i, frame_i = np.arange(n)[:, None, None, None], frame[None, :, None, None]
    x[clip_i, frame_i, rows, cols] += GLYPHS[glyph] * amp
    if DISTRACTOR:
        d = DISTRACTOR
        steps = rng.integers(-1, 2, (2, n, t)).cumsum(axis=2)  # (2, n, T) random walk
        start = rng.integers(0, [[h - d + 1], [w - d + 1]], (2, n))[:, :, None]
        walk_r = np.clip(start[0] + steps[0], 0, h - d)  # (n, T)
        walk_c = np.clip(start[1] + steps[1], 0, w - d)
        k = np.arange(d)
        rows = walk_r[:, :, None, None] + k[:, None]  # (n, T, d, 1)
        cols = walk_c[:, :, None, None] + k[None, :]  # (n, T, 1, d)
        x[clip_i, frame_i, rows, cols] += contrast.mean(axis=1)[:, None, None, None]
    return x[:, None], y  # (n, 1, T, H, W), (n,)


@functools.lru_cache(maxsize=2)
def _arrays(size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed train / test clips at ``size``, generated once per process and size."""
    x, y = make_video_glyphs(N_TRAIN, size, DATA_SEED)
    x_test, y_test = make_video_glyphs(N_TEST, size, DATA_SEED + 1)
    arrays = (x, y, x_test, y_test)
    for a in arrays:
        a.setflags(write=False)  # shared by every call; loaders get copies
    return arrays


def load_video_glyphs(space: Space) -> Raw:
    """The ``video-glyphs`` dataset at the space's ``(T, H, W)``: float32 ``(N, 1, T, H, W)``
    (replicated to 3 channels after normalising for a 3-channel space)."""
    need_video_space(VIDEO_GLYPHS, space, "video clips (C, T, H, W)")
    check_image_channels(VIDEO_GLYPHS, 1, space)
    size = check_video_size(space.size)
    check_fits(VIDEO_GLYPHS, N_TRAIN + N_TEST, space, SYNTHETIC_BYTES_PER_VALUE)
    x, y, x_test, y_test = _arrays(size)
    return Raw(
        x_train=torch.tensor(x),  # (6000, 1, T, H, W) a fresh copy: normalised in place later
        y_train=torch.tensor(y),
        x_test=torch.tensor(x_test),  # (1200, 1, T, H, W)
        y_test=torch.tensor(y_test),
        classes=len(ORDERS),
    )


def shuffle_frames(x: torch.Tensor | np.ndarray, seed: int) -> torch.Tensor | np.ndarray:
    """The same clips ``x`` ``(N, C, T, H, W)`` with each clip's frames in a random order.

    Every clip gets its own permutation of its T frames (all channels alike), drawn from
    ``seed``: the same ``(x, seed)`` gives the same copy. Returns the type it was given (a torch
    tensor stays on its device). On ``video-glyphs`` the copy carries no class information.
    """
    check_int("seed", seed)
    as_numpy = isinstance(x, np.ndarray)
    xt = torch.from_numpy(x) if as_numpy else x
    if xt.ndim != 5:
        raise DatasetError(
            f"shuffle_frames takes clips (N, C, T, H, W), not shape {tuple(xt.shape)}; "
            "allowed: 5-D arrays"
        )
    n, c, t, h, w = xt.shape
    order = np.random.default_rng(seed).random((n, t)).argsort(axis=1)  # (N, T) permutations
    idx = torch.from_numpy(order).to(xt.device)[:, None, :, None, None].expand(n, c, t, h, w)
    out = xt.gather(2, idx)  # (N, C, T, H, W)
    return out.numpy() if as_numpy else out
