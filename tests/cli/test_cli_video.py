"""Video on the command line: searches of the built-in video space, and the bad inputs of
video (a video space on image data and the reverse, a temporal window longer than the clips,
clip folders with differing or too few frames), each one line on stderr, exit 2, nothing
written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.model.space import load_space

runner = CliRunner()

# A small video space: clips of 4 frames of 8x8, one stage that reaches across frames.
SMALL = """\
name = "small-video"

[input]
kind = "video"
channels = 1
size = [4, 8, 8]
classes = 2

[stem]
width = 8

[[stage]]
operator = ["conv", "attention"]
tkernel = [1, 3]
attention = ["temporal"]
heads = [2]
width = [8]
"""


def refused(tmp_path: Path, *args: str) -> str:
    """Run the CLI in ``tmp_path``; it must fail in one line with exit 2 and write nothing."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert not (tmp_path / "results").exists()  # no store written
    return out


@pytest.fixture()
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def clip_folder(root: Path, frames: dict[str, int]) -> Path:
    """``root/train/<class>/<clip>/frame_k.png``: clip name -> frame count, two classes."""
    for i, (clip, n) in enumerate(frames.items()):
        d = root / "train" / f"class{i % 2}" / clip
        d.mkdir(parents=True)
        for k in range(n):
            Image.fromarray(np.full((8, 8), 20 * k, np.uint8)).save(d / f"frame_{k}.png")
    return root


def test_a_video_space_on_image_data_is_refused(here: Path) -> None:
    out = refused(here, "search", "video-glyphs", "--dataset", "digits", "--trials", "1")
    assert "video" in out and "digits" in out


def test_an_image_space_on_video_data_is_refused(here: Path) -> None:
    out = refused(here, "search", "digits", "--dataset", "video-glyphs", "--trials", "1")
    assert "video-glyphs" in out and "video" in out and "image" in out


def test_video_operators_in_an_image_space_are_refused(here: Path) -> None:
    text = SMALL.replace('kind = "video"', 'kind = "image"').replace("[4, 8, 8]", "[8, 8]")
    (here / "bad.toml").write_text(text)
    out = refused(here, "search", "bad.toml", "--dataset", "synthetic", "--trials", "1")
    assert "stage[0]" in out and "image input" in out


def test_a_temporal_window_longer_than_the_clip_is_refused(here: Path) -> None:
    (here / "long.toml").write_text(SMALL.replace("tkernel = [1, 3]", "tkernel = [1, 5]"))
    out = refused(here, "search", "long.toml", "--dataset", "synthetic", "--trials", "1")
    assert "stage[0].tkernel" in out and "5 frames" in out and "4 frames" in out


def test_clips_shorter_than_the_space_are_refused(here: Path) -> None:
    (here / "small.toml").write_text(SMALL)
    root = clip_folder(here / "clips", {"a": 3, "b": 3, "c": 3, "d": 3})
    out = refused(here, "search", "small.toml", "--dataset", f"folder:{root}", "--trials", "1")
    assert "3 frames" in out and "4" in out


def test_clip_folders_with_differing_frame_counts_are_refused(here: Path) -> None:
    (here / "small.toml").write_text(SMALL)
    root = clip_folder(here / "clips", {"a": 4, "b": 4, "c": 5, "d": 4})
    out = refused(here, "search", "small.toml", "--dataset", f"folder:{root}", "--trials", "1")
    assert "differing frame counts" in out and "5 frames" in out


def test_a_small_video_search_runs_and_lists_the_video_baselines(here: Path) -> None:
    (here / "small.toml").write_text(SMALL)
    result = runner.invoke(
        app,
        ["search", "small.toml", "--dataset", "synthetic", "--trials", "2", "--epochs", "1"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "2 complete" in result.output
    listed = runner.invoke(app, ["baselines", "video-glyphs", "--list"])
    assert listed.exit_code == 0
    for name in ("video-3dcnn", "video-transformer", "video-hybrid", "frame-average"):
        assert name in listed.output
    assert load_space("video-glyphs").kind == "video"
