"""Tests for the procedural video dataset ``video-glyphs`` (fusion_nas.training.data.video) and
the kind ``video`` in the dataset loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_nas.errors import DatasetError
from fusion_nas.training.data import DATASETS, load_dataset
from fusion_nas.training.data import video as vg
from fusion_nas.training.data.base import check_space, normalise_float
from fusion_nas.training.data.video import make_video_glyphs, shuffle_frames

VIDEO = dict(kind="video", channels=1, size=(8, 16, 16), classes=6)


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def glyphs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """No noise, no offset, full contrast, no distractor: clips of the glyphs alone."""
    for name, value in (
        ("NOISE_SIGMA", 0.0),
        ("OFFSET_RANGE", 0.0),
        ("CONTRAST", (1.0, 1.0)),
        ("DISTRACTOR", 0),
    ):
        monkeypatch.setattr(vg, name, value)


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, np.ndarray]:
    return make_video_glyphs(600, (8, 16, 16), 5)


# ---------------------------------------------------------------------------------------------
# the generator


def test_shapes_dtypes_balance_and_range(small):
    x, y = small
    assert x.shape == (600, 1, 8, 16, 16) and x.dtype == np.float32
    assert y.shape == (600,) and y.dtype == np.int64
    assert np.bincount(y, minlength=6).tolist() == [100] * 6
    assert np.isfinite(x).all()
    # background offset in [-0.5, 0.5] plus noise (sigma 0.4); glyph pixels add 0.4 to 1
    assert -3.5 < x.min() and x.max() < 4.5
    # a glyph: 10 pixels on average, a 2x2 distractor: 4, both at 0.7 contrast on average
    assert abs(x.mean() - 0.7 * (10 + 4) / 256) < 0.03
    assert 0.45 < x.std() < 0.6  # sqrt(0.4^2 + 1/12 (offset) + glyphs)


def test_deterministic_for_a_seed(small):
    x, y = small
    x2, y2 = make_video_glyphs(600, (8, 16, 16), 5)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = make_video_glyphs(600, (8, 16, 16), 6)
    assert not np.array_equal(x, x3)


def test_every_frame_shows_one_glyph_inside_the_frame(monkeypatch):
    glyphs_alone(monkeypatch)
    x, y = make_video_glyphs(60, (7, 7, 9), 1)  # noise-free: the glyphs alone
    frames = x[:, 0]  # (60, T, H, W)
    assert set(np.unique(frames).tolist()) == {0.0, 1.0}
    counts = frames.sum(axis=(2, 3))  # (60, T): 9 plus, 16 ring, 5 bar
    names = {9.0: 0, 16.0: 1, 5.0: 2}
    for clip, label in zip(counts, y):
        shown = [names[float(c)] for c in clip]
        order = [g for i, g in enumerate(shown) if i == 0 or g != shown[i - 1]]
        assert tuple(order) == vg.ORDERS[label]  # each glyph in one run, in the class's order
        assert min(shown.count(g) for g in range(3)) >= 2  # T >= 6: slots of >= 2 frames


@pytest.mark.parametrize("t", [3, 5, 6, 8, 12])
def test_slot_lengths_are_uniform_compositions(t):
    lengths = vg._slot_lengths(np.random.default_rng(0), 6000, t)  # (N, 3)
    assert (lengths.sum(axis=1) == t).all()
    least = 2 if t >= 6 else 1
    assert lengths.min() == least
    _, counts = np.unique(lengths, axis=0, return_counts=True)
    m = t - 3 * (least - 1)
    assert len(counts) == (m - 1) * (m - 2) // 2  # every composition occurs
    assert counts.max() < 1.3 * counts.min() + 30  # about equally often


def centroid_accuracy(f: np.ndarray, y: np.ndarray, f_test: np.ndarray, y_test: np.ndarray):
    """Test accuracy of a nearest-centroid classifier on features (N, D)."""
    centroids = np.stack([f[y == k].mean(axis=0) for k in range(6)])  # (6, D)
    d = ((f_test[:, None] - centroids[None]) ** 2).sum(axis=-1)  # (N_test, 6)
    return float((d.argmin(axis=1) == y_test).mean())


def test_frame_average_at_chance_frame_order_informative():
    x, y = make_video_glyphs(3000, (8, 16, 16), 11)
    x_test, y_test = make_video_glyphs(1200, (8, 16, 16), 12)

    def average(a):  # (N, H*W): the frame average of each clip
        return a.mean(axis=2).reshape(len(a), -1)

    def profile(a):  # (N, T): each frame's brightness, less the clip's (the offset cancels)
        s = a.sum(axis=(1, 3, 4))
        return s - s.mean(axis=1, keepdims=True)

    def frames_as_a_bag(a):  # (N, T): the profile sorted, which forgets the frame order
        return np.sort(profile(a), axis=1)

    assert centroid_accuracy(average(x), y, average(x_test), y_test) < 0.25
    bag = centroid_accuracy(frames_as_a_bag(x), y, frames_as_a_bag(x_test), y_test)
    assert bag < 0.25
    in_order = centroid_accuracy(profile(x), y, profile(x_test), y_test)
    assert in_order > 0.4  # chance is 1/6
    shuffled, shuffled_test = shuffle_frames(x, 1), shuffle_frames(x_test, 2)
    assert centroid_accuracy(profile(shuffled), y, profile(shuffled_test), y_test) < 0.25


def test_class_means_of_frame_averages_are_equal(monkeypatch):
    glyphs_alone(monkeypatch)
    x, y = make_video_glyphs(6000, (8, 9, 9), 3)  # noise-free: the glyphs alone
    avg = x.mean(axis=2)[:, 0]  # (N, H, W) frame averages
    total = avg.sum(axis=(1, 2))  # (N,) glyph pixels per frame, averaged over the clip
    means = np.array([total[y == k].mean() for k in range(6)])  # (6,)
    error = total.std() / np.sqrt(1000)  # standard error of one class's mean
    assert np.abs(means - total.mean()).max() < 4 * error
    assert abs(total.mean() - (9 + 16 + 5) / 3) < 4 * error / np.sqrt(6)  # each glyph T/3 frames
    maps = np.stack([avg[y == k].mean(axis=0) for k in range(6)])  # (6, H, W)
    pixel_error = avg.std(axis=0) / np.sqrt(1000)  # (H, W)
    assert (np.abs(maps - avg.mean(axis=0)) < 5 * pixel_error + 1e-6).all()


def test_too_small_sizes_refused():
    for size, what in (((2, 16, 16), "T=2"), ((8, 6, 16), "H=6"), ((8, 16, 6), "W=6")):
        with pytest.raises(DatasetError) as info:
            make_video_glyphs(6, size, 0)
        assert what in one_line(info) and "(3, 7, 7)" in str(info.value)
    with pytest.raises(DatasetError, match="is not \\(T, H, W\\)"):
        make_video_glyphs(6, (16, 16), 0)
    with pytest.raises(DatasetError, match="video-glyphs' size T=2 is too small"):
        load_dataset("video-glyphs", **dict(VIDEO, size=(2, 16, 16)))
    x, _ = make_video_glyphs(6, (3, 7, 7), 0)  # the minimum works
    assert x.shape == (6, 1, 3, 7, 7)


def test_default_size_generates_quickly_enough_to_use():
    # not a timing assertion: the sizes a trial loads, and their types
    x, y = make_video_glyphs(vg.N_TRAIN, vg.DEFAULT_SIZE, vg.DATA_SEED)
    assert x.shape == (6000, 1, 8, 16, 16) and np.bincount(y).tolist() == [1000] * 6


# ---------------------------------------------------------------------------------------------
# shuffle_frames


def test_shuffle_frames_keeps_each_clips_frames(small):
    x, _ = small
    s = shuffle_frames(x, 3)
    assert isinstance(s, np.ndarray) and s.shape == x.shape
    assert not np.array_equal(s, x)
    flat = x.reshape(*x.shape[:3], -1)  # (N, C, T, H*W): frames as rows
    flat_s = s.reshape(*s.shape[:3], -1)
    for a, b in zip(flat[:50], flat_s[:50]):
        rows_a = sorted(map(bytes, a[0])), sorted(map(bytes, b[0]))
        assert rows_a[0] == rows_a[1]  # the same multiset of frames
    assert np.array_equal(shuffle_frames(x, 3), s)  # seeded
    assert not np.array_equal(shuffle_frames(x, 4), s)
    orders = {tuple(np.argsort(s[i, 0, :, 0, 0])) for i in range(20)}
    assert len(orders) > 1  # each clip its own order


def test_shuffle_frames_torch_all_channels_alike():
    x = torch.arange(4 * 2 * 5, dtype=torch.float32).reshape(4, 2, 5, 1, 1).expand(4, 2, 5, 3, 3)
    s = shuffle_frames(x, 0)
    assert isinstance(s, torch.Tensor) and s.shape == x.shape
    assert torch.equal(s[:, 1] - s[:, 0], torch.full((4, 5, 3, 3), 5.0))  # channels move together
    assert torch.equal(s.sort(dim=2).values, x)
    with pytest.raises(DatasetError) as info:
        shuffle_frames(torch.zeros(2, 1, 8, 8), 0)
    assert "(N, C, T, H, W)" in one_line(info)


# ---------------------------------------------------------------------------------------------
# the dataset through load_dataset


def test_registered_and_loaded_as_float_clips():
    assert "video-glyphs" in DATASETS
    splits = load_dataset("video-glyphs", **VIDEO, seed=1)
    assert splits.name == "video-glyphs" and splits.classes == 6
    x, y = splits.train.tensors
    x_val, _ = splits.val.tensors
    x_test, y_test = splits.test.tensors
    assert tuple(x.shape[1:]) == (1, 8, 16, 16) and x.dtype == torch.float32
    assert len(x) == 4800 and len(x_val) == 1200 and len(x_test) == 1200
    assert torch.bincount(y_test).tolist() == [200] * 6
    everything = torch.cat([x, x_val])  # normalised with all the training clips' statistics
    assert abs(float(everything.mean())) < 1e-3 and abs(float(everything.std()) - 1) < 1e-3
    again = load_dataset("video-glyphs", **VIDEO, seed=1)
    assert torch.equal(again.train.tensors[0], x)  # the cached arrays were not normalised
    other = load_dataset("video-glyphs", **VIDEO, seed=2)
    assert torch.equal(other.test.tensors[0], x_test)  # the split seed moves only train / val
    assert not torch.equal(other.train.tensors[0][:10], x[:10])


def test_three_channel_space_gets_replicated_clips():
    splits = load_dataset("video-glyphs", **dict(VIDEO, channels=3, size=(6, 9, 9)))
    x, _ = splits.train.tensors
    assert tuple(x.shape[1:]) == (3, 6, 9, 9)
    assert torch.equal(x[:, 0], x[:, 2])
    with pytest.raises(DatasetError) as info:
        load_dataset("video-glyphs", **dict(VIDEO, channels=2))
    assert "allowed: 1, 3" in one_line(info)


def test_normalise_float_per_channel_on_clips():
    x = torch.randn(10, 2, 3, 4, 5) * torch.tensor([1.0, 5.0])[None, :, None, None, None] + 3
    test = x[:4].clone()
    out, out_test = normalise_float(x.clone(), test)
    dims = (0, 2, 3, 4)
    assert torch.allclose(out.mean(dim=dims), torch.zeros(2), atol=1e-5)
    assert torch.allclose(out.std(dim=dims), torch.ones(2), atol=1e-5)
    assert out_test.shape == (4, 2, 3, 4, 5)


def test_synthetic_fits_a_video_space():
    splits = load_dataset("synthetic", kind="video", channels=2, size=(4, 8, 8), classes=3)
    assert tuple(splits.train.tensors[0].shape[1:]) == (2, 4, 8, 8)
    assert len(splits.test) == 200


# ---------------------------------------------------------------------------------------------
# kinds that do not fit: one line each


def test_video_space_size_must_be_three_numbers():
    assert check_space("video", 1, (8, 16, 16)).size == (8, 16, 16)
    with pytest.raises(DatasetError) as info:
        check_space("video", 1, (16, 16))
    assert "does not fit kind 'video'" in one_line(info) and "(T, H, W)" in str(info.value)


def test_video_glyphs_refuses_other_kinds():
    with pytest.raises(DatasetError) as info:
        load_dataset("video-glyphs", kind="image", channels=1, size=(16, 16), classes=6)
    assert one_line(info) == (
        "dataset 'video-glyphs' holds video clips (C, T, H, W) but the search space is kind "
        "'image'; use a video space (kind 'video', size (T, H, W))"
    )
    with pytest.raises(DatasetError, match="is kind 'sequence'; use a video space"):
        load_dataset("video-glyphs", kind="sequence", channels=1, size=(40,), classes=6)


def test_image_and_sequence_datasets_refuse_a_video_space():
    with pytest.raises(DatasetError) as info:
        load_dataset("digits", kind="video", channels=1, size=(8, 8, 8), classes=10)
    assert "holds 8x8 images but the search space is kind 'video'" in one_line(info)
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist1d", kind="video", channels=1, size=(8, 8, 8), classes=10)
    assert "search space is a video space" in one_line(info)
