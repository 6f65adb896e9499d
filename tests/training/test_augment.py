"""Tests for fusion_nas.training.augment and the augmentation settings of ProxyConfig."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

from fusion_nas.training.augment import (
    AugmentError,
    BatchAugment,
    Mixed,
    check_augment,
    cut_out,
    default_augment,
    flip_some,
    parse_augment,
    random_crop,
)
from fusion_nas.training.data import ArrayImages
from fusion_nas.training.data.images import pixel_stats
from fusion_nas.training.loop import STORED_DEFAULTS, ProxyConfig, train_proxy


def test_parse_and_defaults():
    assert parse_augment(None) is None and parse_augment("auto") is None
    assert parse_augment("flip, crop") == "crop,flip" and parse_augment("NONE") == "none"
    for bad in ("rotate", "crop,rotate", "", 3):
        with pytest.raises(AugmentError, match="allowed: 'auto', 'crop,flip'"):
            parse_augment(bad)
    assert default_augment("folder:/x") == default_augment("cifar10:/x") == "crop,flip"
    for name in ("mnist1d", "digits", "synthetic", "fashion-mnist", "custom"):
        assert default_augment(name) == "none"


def test_proxy_settings_checked_and_stored():
    p = ProxyConfig(augment="flip,crop", cutout=8, mixup=0.2, label_smoothing=0.1)
    assert p.augment == "crop,flip" and p.to_dict()["cutout"] == 8
    for bad in (dict(cutout=-1), dict(crop_padding=1.5), dict(mixup=-1.0), dict(label_smoothing=1)):
        with pytest.raises(AugmentError):
            ProxyConfig(**bad)
    # a proxy stored before augmentation existed trained without it
    old = {k: v for k, v in ProxyConfig().to_dict().items() if k not in STORED_DEFAULTS}
    assert ProxyConfig.from_dict(old).augment == "none"
    assert ProxyConfig.from_dict({**old, "future_setting": 1}) == ProxyConfig(augment="none")


def test_sequences_refuse_image_transforms():
    check_augment(ProxyConfig(mixup=0.2, label_smoothing=0.1), "sequence")  # fits any data
    for settings in (ProxyConfig(augment="flip"), ProxyConfig(cutout=4)):
        with pytest.raises(AugmentError) as info:
            check_augment(settings, "sequence")
        assert "kind 'sequence'" in str(info.value) and "\n" not in str(info.value)
    aug = BatchAugment(0, flip=True)
    with pytest.raises(AugmentError, match="not inputs of shape"):
        aug(torch.zeros(2, 1, 10), torch.zeros(2, dtype=torch.long))


def test_video_clips_take_image_transforms():
    check_augment(ProxyConfig(augment="crop,flip", cutout=2), "video")
    assert default_augment("folder:/clips") == "crop,flip"  # a folder of clips is natural data


@pytest.mark.parametrize(
    "settings",
    [dict(crop=True, flip=True, crop_padding=2), dict(crop=True), dict(flip=True), dict(cutout=3)],
)
def test_video_every_frame_of_a_clip_transformed_alike(settings):
    x = torch.randn(5, 2, 4, 6, 7)  # (B, C, T, H, W)
    y = torch.arange(5)
    out, target = BatchAugment(3, **settings)(x, y)
    assert out.shape == x.shape and torch.equal(target, y)
    assert not torch.equal(out, x)
    for t in range(4):  # the same seed draws the same per-clip numbers for one frame alone
        frame, _ = BatchAugment(3, **settings)(x[:, :, t], y)  # (B, C, H, W)
        assert torch.equal(out[:, :, t], frame)


def test_video_mixup_blends_whole_clips():
    x = torch.randn(4, 1, 3, 5, 5)
    out, target = BatchAugment(0, flip=True, mixup=0.4)(x, torch.arange(4))
    assert out.shape == x.shape and isinstance(target, Mixed)


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5) + 1
    offsets = torch.tensor([[0, 2], [2, 1]])  # (top, left) per image: (0, 2), (2, 1)
    out = random_crop(x, 1, offsets)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    assert torch.equal(out[0], padded[0, :, 0:4, 2:7])
    assert torch.equal(out[1], padded[1, :, 2:6, 1:6])
    assert torch.equal(random_crop(x, 1, torch.ones(2, 2, dtype=torch.long)), x)  # centred


def test_flip_and_cutout():
    x = torch.randn(3, 2, 4, 4)
    out = flip_some(x, torch.tensor([True, False, True]))
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])
    cut = cut_out(torch.ones(1, 1, 6, 6), 2, torch.tensor([[0.5], [0.5]]))
    assert cut.sum() == 36 - 4 and cut[0, 0, 2:4, 2:4].sum() == 0
    edge = cut_out(torch.ones(1, 1, 6, 6), 4, torch.tensor([[0.0], [0.0]]))
    assert edge.sum() == 36 - 4  # clipped at the corner


def test_deterministic_for_a_seed_and_off_draws_nothing():
    x, y = torch.randn(8, 3, 6, 6), torch.arange(8)
    runs = []
    for seed in (1, 1, 2):
        aug = BatchAugment(seed, crop=True, flip=True, crop_padding=2, cutout=2, mixup=0.4)
        runs.append(aug(x, y))
    assert torch.equal(runs[0][0], runs[1][0]) and not torch.equal(runs[0][0], runs[2][0])
    assert isinstance(runs[0][1], Mixed) and 0 <= runs[0][1].lam <= 1
    off = BatchAugment(1)
    state = dict(off.state())
    out, target = off(x, y)
    assert out is x and target is y and dict(off.state()) == state


def test_mixup_loss_and_label_smoothing():
    logits = torch.randn(4, 3)
    y, y2 = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    aug = BatchAugment(0, label_smoothing=0.1)
    f = torch.nn.functional.cross_entropy
    assert torch.allclose(aug.loss(logits, y), f(logits, y, label_smoothing=0.1))
    mixed = aug.loss(logits, Mixed(y, y2, 0.3))
    expected = 0.3 * f(logits, y, label_smoothing=0.1) + 0.7 * f(logits, y2, label_smoothing=0.1)
    assert torch.allclose(mixed, expected)


def _images(n: int = 64) -> ArrayImages:
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = (pixels[:, 0].float().mean(dim=(1, 2)) > 127).long()
    mean, std = pixel_stats(pixels)
    return ArrayImages(pixels, labels, mean, std, 3, natural=True)


def _run(config: ProxyConfig, data, seed: int = 0, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    result = train_proxy(model, data, data, config, seed=seed, **kw)
    return result, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_with_augmentation_is_deterministic_and_resumes_exactly():
    data = _images()
    config = ProxyConfig(epochs=3, batch_size=16, cutout=2, mixup=0.2, label_smoothing=0.1)
    a, wa = _run(config, data)
    b, wb = _run(config, data)
    assert a.curve == b.curve and torch.equal(wa, wb)
    stopped, _ = _run(config, data, stop_after=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    resumed = train_proxy(model, data, data, config, seed=0, resume=stopped.state)
    assert resumed.curve == a.curve
    assert torch.equal(torch.cat([p.detach().flatten() for p in model.parameters()]), wa)


def test_default_augmentation_follows_the_data():
    natural = _images()
    plain = TensorDataset(*(t.clone() for t in (natural.tensors[0], natural.labels)))
    config = ProxyConfig(epochs=1, batch_size=16)
    # natural images: None means crop and flip; the same data as floats: nothing
    _, w_default = _run(config, natural)
    _, w_explicit = _run(dataclasses.replace(config, augment="crop,flip"), natural)
    _, w_float = _run(config, plain)
    _, w_none = _run(dataclasses.replace(config, augment="none"), natural)
    assert torch.equal(w_default, w_explicit)
    assert torch.equal(w_float, w_none) and not torch.equal(w_default, w_none)
