"""Tests for fusion_nas.training.data.clips: ``folder:PATH`` of clips with a video space."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusion_nas.errors import DatasetError
from fusion_nas.training.data import load_dataset
from fusion_nas.training.data.base import check_space
from fusion_nas.training.data.clips import PYAV_HINT, load_clips, natural_key, sample_frames


def grey_frames(n: int, h: int = 10, w: int = 12, base: int = 0) -> np.ndarray:
    """``n`` flat grey frames (n, h, w) uint8, frame k at ``base + 10 * (k + 1)``."""
    levels = base + 10 * (np.arange(n) + 1)
    return np.broadcast_to(levels[:, None, None], (n, h, w)).astype(np.uint8)


def frame_dir(clip: Path, frames: np.ndarray) -> Path:
    """A clip directory of PNG frames named frame_1.png ... frame_n.png."""
    clip.mkdir(parents=True)
    for k, f in enumerate(frames):
        Image.fromarray(f).save(clip / f"frame_{k + 1}.png")
    return clip


def gif(path: Path, frames: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
    return path


def mp4(path: Path, frames: np.ndarray) -> Path:
    """A video of grey frames (n, h, w) (even h and w), MPEG-4 part 2 at 8 frames a second."""
    av = pytest.importorskip("av")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "1"}  # near lossless: flat frames decode within a level or so
        for f in frames:
            rgb = np.repeat(f[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def space(t: int = 4, h: int = 8, w: int = 8, channels: int = 1):
    return check_space("video", channels, (t, h, w))


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    """2 classes, 3 training clips and 1 test clip each, 6 frames of 10x12 per clip."""
    for split, count in (("train", 3), ("test", 1)):
        for label, name in enumerate(("left", "right")):
            for i in range(count):
                frame_dir(tmp_path / split / name / f"c{i}", grey_frames(6, base=100 * label))
    return tmp_path


def test_natural_order_and_sampling():
    names = ["frame_10.png", "frame_2.png", "frame_1.png", "Frame_3.png"]
    assert sorted(names, key=natural_key) == [
        "frame_1.png",
        "frame_2.png",
        "Frame_3.png",
        "frame_10.png",
    ]
    assert sample_frames(6, 4).tolist() == [0, 2, 3, 5]
    assert sample_frames(8, 8).tolist() == list(range(8))
    assert sample_frames(10, 3).tolist() == [0, 4, 9]


def test_frame_directories_read_sampled_and_split(clips):
    raw = load_clips(str(clips), space(t=4))
    assert raw.x_train.shape == (6, 1, 4, 8, 8) and raw.x_train.dtype == torch.float32
    assert raw.x_test.shape == (2, 1, 4, 8, 8)
    assert raw.y_train.tolist() == [0, 0, 0, 1, 1, 1] and raw.y_test.tolist() == [0, 1]
    assert raw.classes == 2 and raw.skipped == 0
    # flat frames stay flat when resized; frames 0, 2, 3, 5 of 6 (round(linspace(0, 5, 4)))
    levels = raw.x_train[:, 0, :, 0, 0] * 255  # (N, T)
    assert torch.allclose(raw.x_train, raw.x_train[:, :, :, :1, :1].expand_as(raw.x_train))
    expected = torch.tensor([10.0, 30, 40, 60])
    assert torch.allclose(levels[0], expected) and torch.allclose(levels[3], expected + 100)


def test_frames_read_in_natural_order(tmp_path):
    frame_dir(tmp_path / "train" / "a" / "clip", grey_frames(12))  # frame_1 ... frame_12
    raw = load_clips(str(tmp_path), space(t=12))
    levels = (raw.x_train[0, 0, :, 0, 0] * 255).round()
    assert levels.tolist() == [10.0 * (k + 1) for k in range(12)]
    assert raw.x_test is None


def test_through_load_dataset(clips):
    splits = load_dataset(
        f"folder:{clips}", kind="video", channels=3, size=(4, 8, 8), classes=2, seed=3
    )
    x, _ = splits.train.tensors
    assert tuple(x.shape[1:]) == (3, 4, 8, 8)  # grey replicated
    assert torch.equal(x[:, 0], x[:, 2])
    assert len(splits.train) + len(splits.val) == 6 and len(splits.test) == 2
    assert splits.skipped == 0 and splits.name == f"folder:{clips}"


def test_rgb_frames_read_as_grey_or_rgb(tmp_path):
    clip = tmp_path / "train" / "a" / "clip"
    clip.mkdir(parents=True)
    for k in range(3):
        Image.new("RGB", (8, 8), (200, 20 * k, 0)).save(clip / f"{k}.png")
    rgb = load_clips(str(tmp_path), space(t=3, channels=3)).x_train  # (1, 3, 3, 8, 8)
    assert (rgb[0, :, :, 0, 0] * 255).round().tolist() == [[200] * 3, [0, 20, 40], [0] * 3]
    grey = load_clips(str(tmp_path), space(t=3, channels=1)).x_train
    assert grey.shape == (1, 1, 3, 8, 8)
    assert 0.2 < float(grey[0, 0, 0, 0, 0]) < 0.3  # Pillow's L = 0.299 R + 0.587 G + 0.114 B


def test_gif_clips(tmp_path):
    gif(tmp_path / "train" / "a" / "one.gif", grey_frames(5))
    gif(tmp_path / "train" / "b" / "two.gif", grey_frames(5, base=100))
    raw = load_clips(str(tmp_path), space(t=5, h=10, w=12))
    assert raw.x_train.shape == (2, 1, 5, 10, 12)
    levels = (raw.x_train[:, 0, :, 5, 5] * 255).round()
    assert levels.tolist() == [[10.0, 20, 30, 40, 50], [110.0, 120, 130, 140, 150]]


def test_video_files_decoded_with_pyav(tmp_path):
    mp4(tmp_path / "train" / "a" / "one.mp4", grey_frames(10, h=16, w=16))
    mp4(tmp_path / "train" / "b" / "two.mp4", grey_frames(10, h=16, w=16, base=100))
    raw = load_clips(str(tmp_path), space(t=5, h=16, w=16))
    assert raw.x_train.shape == (2, 1, 5, 16, 16)
    keep = sample_frames(10, 5)  # [0, 2, 4, 7, 9]
    levels = [[base + 10.0 * (k + 1) for k in keep.tolist()] for base in (0, 100)]
    expected = torch.tensor(levels)
    decoded = raw.x_train[:, 0].mean(dim=(2, 3)) * 255  # (2, T) mean level of each frame
    assert torch.allclose(decoded, expected, atol=4.0)


def test_video_file_without_pyav(tmp_path, monkeypatch):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "one.mp4").write_bytes(b"not decoded")
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(DatasetError) as info:
        load_clips(str(tmp_path), space())
    assert one_line(info).endswith(PYAV_HINT) and "one.mp4" in str(info.value)


def test_differing_frame_counts_one_line(clips):
    bad = frame_dir(clips / "train" / "right" / "c9", grey_frames(5))
    with pytest.raises(DatasetError) as info:
        load_clips(str(clips), space())
    assert one_line(info) == (
        f"clips have differing frame counts: {bad} has 5 frames, the others 6; allowed: the "
        "same number of frames in every clip"
    )
    with pytest.raises(DatasetError, match="differing frame counts"):
        load_dataset(f"folder:{clips}", kind="video", channels=1, size=(4, 8, 8), classes=2)


def test_too_short_clips_one_line(clips):
    with pytest.raises(DatasetError) as info:
        load_clips(str(clips), space(t=8))
    message = one_line(info)
    assert message.startswith(f"clip {clips / 'train' / 'left' / 'c0'} has 6 frames")
    assert message.endswith(
        "but the search space's clips are 8 frames long (T); allowed: clips of >= 8 frames or "
        "a space with size T <= 6"
    )


class _Lines(logging.Handler):
    """The messages logged to the clip reader's logger (pytest's caplog misses them after
    another test's search has reconfigured logging)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture()
def logged():
    from fusion_nas.training.data import clips as module

    handler = _Lines()
    module.log.addHandler(handler)
    yield handler.lines
    module.log.removeHandler(handler)


def test_unreadable_frame_skips_the_clip(clips, logged):
    (clips / "train" / "left" / "c1" / "frame_3.png").write_bytes(b"not a png")
    splits = load_dataset(f"folder:{clips}", kind="video", channels=1, size=(4, 8, 8), classes=2)
    assert splits.skipped == 1 and len(splits.train) + len(splits.val) == 5
    assert any("c1" in line and "frame_3.png" in line for line in logged), logged


def test_layout_errors_mirror_the_image_folder(tmp_path):
    with pytest.raises(DatasetError, match="has no train/ folder; expected PATH/train/<class>/<cl"):
        load_clips(str(tmp_path), space())
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "train" / "a" / "0.png")  # an image, not a clip
    with pytest.raises(DatasetError) as info:
        load_dataset(f"folder:{tmp_path}", kind="video", channels=1, size=(4, 8, 8), classes=1)
    assert "holds no clips (it holds images such as '0.png')" in one_line(info)
    frame_dir(tmp_path / "train" / "b" / "clip", grey_frames(4))
    (tmp_path / "test" / "c").mkdir(parents=True)
    with pytest.raises(DatasetError, match="test classes \\['c'\\] do not match train classes"):
        load_clips(str(tmp_path), space())
    with pytest.raises(DatasetError) as info:
        load_clips(str(tmp_path), space(channels=2))
    assert "allowed: 1, 3" in one_line(info)


def test_clip_folder_with_an_image_space_one_line(clips):
    with pytest.raises(DatasetError) as info:
        load_dataset(f"folder:{clips}", kind="image", channels=1, size=(8, 8), classes=2)
    assert "holds no images" in one_line(info)


def test_unreadable_video_files_skipped(clips, logged):
    (clips / "train" / "left" / "broken.mp4").write_bytes(b"not a video")
    (clips / "train" / "right" / "broken.gif").write_bytes(b"not a gif")
    raw = load_clips(str(clips), space())
    assert raw.skipped == 2 and len(raw.y_train) == 6
    skipped = [line for line in logged if "skipped unreadable clip" in line]
    assert len(skipped) == 2 and all("\n" not in m for m in skipped)
