"""video-glyphs needs time: a network that reads frame order learns it, and the same trained
network drops to chance on a frame-shuffled copy of the clips it scores well on."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from fusion_nas.analysis.baselines import select
from fusion_nas.model.space import load_space
from fusion_nas.training.data.video import shuffle_frames
from fusion_nas.training.loop import ProxyConfig, evaluate_accuracy
from fusion_nas.training.protocol import TrainingProtocol

CHANCE = 1 / 6


def test_a_trained_network_drops_to_chance_on_frame_shuffled_clips() -> None:
    torch.set_num_threads(1)
    space = load_space("video-glyphs")
    (cnn,) = select(space, ["video-3dcnn"])[0]  # conv across frames: it sees their order
    proxy = ProxyConfig(epochs=5, batch_size=64, lr=1e-2)
    protocol = TrainingProtocol(dataset="video-glyphs", space=space, proxy=proxy, seed=0)
    model, result = protocol.proxy_score(cnn.build)
    assert result.val_acc > CHANCE + 0.15, result.val_acc  # it learned the order
    x, y = protocol.proxy_splits().val.tensors  # (N, 1, 8, 16, 16), (N,)
    assert evaluate_accuracy(model, TensorDataset(x, y)) == result.val_acc
    shuffled = evaluate_accuracy(model, TensorDataset(shuffle_frames(x, 0), y))
    assert abs(shuffled - CHANCE) < 0.06, (result.val_acc, shuffled)
    # the frames of each clip are the same, only their order changed
    assert torch.equal(shuffle_frames(x, 0).sort(dim=2).values, x.sort(dim=2).values)
