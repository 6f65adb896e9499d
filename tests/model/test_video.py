"""Video blocks: exact cost against hand counts, forwards against hand-written references,
mutations the references catch, frame-order (in)variance, and one-line config errors.

Video maps are (B, C, T, H, W); tokens run t * (H * W) + h * W + w (``to_tokens``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas.model import nets
from fusion_nas.model.cost import count_cost
from fusion_nas.model.nets import (
    ATTENTIONS,
    OPS,
    BlockCfg,
    CfgError,
    FusionNet,
    NetCfg,
    StageCfg,
    split_share,
)

C = 8  # block width
HEADS = 2
SIZES = [(4, 3, 5), (6, 5, 3)]  # (T, H, W): two clip lengths, non-square frames


def block(op: str, size: tuple[int, ...], **fields) -> nn.Module:
    """An operator block of width ``C`` on maps of ``size``, in eval mode."""
    torch.manual_seed(0)
    cfg = BlockCfg(operator=op, width=fields.pop("width", C), **fields)
    return OPS[op](cfg, size).eval()


def mixer(variant: str, size: tuple[int, ...], **fields) -> nn.Module:
    """An attention variant (no residual, no MLP) of width ``C``, in eval mode."""
    torch.manual_seed(0)
    cfg = BlockCfg(
        operator="attention", width=C, attention=variant, heads=fields.pop("heads", HEADS), **fields
    )
    return ATTENTIONS[variant](cfg, size).eval()


def cost(m: nn.Module, size: tuple[int, ...], channels: int = C) -> tuple[int, int]:
    c = count_cost(m, torch.randn(1, channels, *size))  # batch of one
    return c.macs, c.params


# --------------------------------------------------------------------------- hand counts
# MACs for a batch of one; norms, activations, softmax, pooling and additions count zero.


def conv_macs(c: int, size, t: int, k: int) -> int:
    """Same-padding c -> c conv of kernel (t, k, k): out.numel() * c_in * t * k * k."""
    return math.prod(size) * c * c * t * k * k


def conv_params(c: int, t: int, k: int) -> int:
    return c * c * t * k * k + 2 * c  # bias-free conv + BatchNorm (weight, bias)


def proj_macs(c: int, size) -> int:
    """qkv Linear(c, 3c) and proj Linear(c, c) on every one of the N = T*H*W tokens."""
    return math.prod(size) * (c * 3 * c + c * c)


def mixer_params(c: int, size=None, extra: int = 0) -> int:
    """LayerNorm, qkv, proj (+ a learned position per token and channel when ``size``)."""
    pos = c * math.prod(size) if size is not None else 0
    return 2 * c + (3 * c * c + 3 * c) + (c * c + c) + pos + extra


def sdpa_macs(groups: int, n: int, c: int) -> int:
    """QK^T + AV of ``groups`` groups of ``n`` tokens: per head 2 * n * n * hd, hd * heads = c."""
    return groups * 2 * n * n * c


def mixing_macs(variant: str, size, c: int, window: int = 4) -> int:
    """Token mixing (sdpa only) of one attention variant on (T, H, W)."""
    T, H, W = size
    if variant == "temporal":
        return sdpa_macs(H * W, T, c)  # one group per position, its T frames
    if variant == "spatial":
        return sdpa_macs(T, H * W, c)  # one group per frame, its H*W positions
    if variant == "divided":
        return sdpa_macs(H * W, T, c) + sdpa_macs(T, H * W, c)
    if variant == "global":
        return sdpa_macs(1, T * H * W, c)  # joint space-time
    assert variant == "window"
    ext = [min(window, s) for s in size]
    n_windows = math.prod(-(-s // e) for s, e in zip(size, ext))  # padded / extent per axis
    return sdpa_macs(n_windows, math.prod(ext), c)


def mlp(c: int, size, ratio: float = 2.0) -> tuple[int, int]:
    """(MACs, params) of the pre-norm MLP: fc1 c -> hidden, fc2 hidden -> c."""
    hidden = max(1, round(c * ratio))
    return 2 * math.prod(size) * c * hidden, 2 * c + c * hidden + hidden + hidden * c + c


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("t", [1, 3])
def test_conv_block_cost_by_hand(size, t) -> None:
    assert cost(block("conv", size, kernel=3, tkernel=t), size) == (
        conv_macs(C, size, t, 3),
        conv_params(C, t, 3),
    )


@pytest.mark.parametrize("size", SIZES)
def test_r2plus1d_cost_by_hand(size) -> None:
    N, k, t = math.prod(size), 3, 3
    macs = N * C * C * k * k + N * C * C * t  # (1, k, k) conv, then (t, 1, 1) conv
    params = (C * C * k * k + 2 * C) + (C * C * t + 2 * C)  # each conv with its BatchNorm
    assert cost(block("r2plus1d", size, kernel=k, tkernel=t), size) == (macs, params)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["temporal", "spatial", "divided", "global", "window"])
def test_attention_block_cost_by_hand(size, variant) -> None:
    m = block("attention", size, attention=variant, heads=HEADS, window=4, pos="learned")
    mm, mp = mlp(C, size)
    parts = 2 if variant == "divided" else 1  # divided: a temporal and a spatial mixer
    macs = parts * proj_macs(C, size) + mixing_macs(variant, size, C) + mm
    params = parts * mixer_params(C, size) + mp
    assert cost(m, size) == (macs, params)


@pytest.mark.parametrize("size", SIZES)
def test_relative_bias_params_by_hand(size) -> None:
    T, H, W = size
    # temporal: (2T - 1) offsets per head; spatial: (2H - 1)(2W - 1) per head
    assert cost(mixer("temporal", size, pos="bias"), size)[1] == mixer_params(
        C, extra=HEADS * (2 * T - 1)
    )
    assert cost(mixer("spatial", size, pos="bias"), size)[1] == mixer_params(
        C, extra=HEADS * (2 * H - 1) * (2 * W - 1)
    )


def test_window_on_video_pads_every_axis() -> None:
    size = (6, 5, 3)  # window 4: extents (4, 4, 3), padded (8, 8, 3): 2 * 2 * 1 windows
    assert mixing_macs("window", size, C) == 4 * 2 * 48 * 48 * C
    assert cost(mixer("window", size, window=4), size)[0] == proj_macs(C, size) + 4 * 2 * 48**2 * C


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", ["parallel", "gated", "split"])
def test_fused_blocks_cost_by_hand(size, op) -> None:
    m = block(op, size, attention="temporal", heads=HEADS, kernel=3, tkernel=3, pos="none")
    N = math.prod(size)
    mm, mp = mlp(C, size)
    if op == "split":
        c = split_share(C, 0.5)  # conv channels; the attention takes C - c
        a = C - c
        macs = conv_macs(c, size, 3, 3) + proj_macs(a, size) + mixing_macs("temporal", size, a)
        macs += N * C * C + mm  # 1x1x1 fuse conv over the concatenation
        params = conv_params(c, 3, 3) + mixer_params(a) + (C * C + C) + mp
    else:
        macs = conv_macs(C, size, 3, 3) + proj_macs(C, size) + mixing_macs("temporal", size, C)
        macs += mm
        params = conv_params(C, 3, 3) + mixer_params(C) + mp
        if op == "parallel":
            params += 2 * C  # conv_weight, attn_weight
        else:
            macs += C * C  # gate Linear(C, C) on the pooled (1, C) vector
            params += (C * C + C) + C  # gate, scale
    assert cost(m, size) == (macs, params)


def test_tiny_video_network_cost_by_hand() -> None:
    T, H, W = 4, 6, 5
    cfg = NetCfg(
        in_channels=3,
        size=(T, H, W),
        classes=5,
        stem_width=C,
        stages=(StageCfg(BlockCfg(operator="conv", width=C, kernel=3, tkernel=3)),),
    )
    N = T * H * W
    stem = N * C * 3 * 1 * 3 * 3  # per-frame (1, 3, 3) stem conv, stride 1
    macs = stem + conv_macs(C, (T, H, W), 3, 3) + C * 5  # + the head's Linear(C, 5)
    params = (3 * C * 9 + C) + 2 * C + conv_params(C, 3, 3) + 2 * C + (C * 5 + 5)
    assert cost(FusionNet(cfg), (T, H, W), channels=3) == (macs, params)


# --------------------------------------------------------------------------- references


def qkv_of(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mixer's (B, N, 3C) queries/keys/values (its position encoding and LayerNorm)."""
    if m.pos is not None:
        x = x + m.pos
    elif m.cpe is not None:
        x = x + m.cpe(x)
    return m.qkv(m.norm(nets.to_tokens(x)))


def plain_attention(q, k, v, bias=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for one group and head: (n, d) -> (n, d)."""
    logits = q @ k.T / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    return logits.softmax(-1) @ v


def temporal_reference(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Loop over batch, positions and heads; each position's T frames attend to each other."""
    B, Cx, T, H, W = x.shape
    h, d = m.heads, Cx // m.heads
    qkv = qkv_of(m, x).reshape(B, T, H, W, 3 * Cx)
    out = torch.zeros(B, T, H, W, Cx)
    bias = None if m.rel is None else m.rel.matrix()  # (heads, T, T)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                seq = qkv[b, :, i, j]  # (T, 3C): this position in every frame
                q, k, v = seq.chunk(3, dim=-1)
                for head in range(h):
                    s = slice(head * d, (head + 1) * d)
                    hb = None if bias is None else bias[head]
                    out[b, :, i, j, s] = plain_attention(q[:, s], k[:, s], v[:, s], hb)
    return nets.from_tokens(m.proj(out.reshape(B, T * H * W, Cx)), (T, H, W))


def spatial_reference(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same weights in a 2-D ``global`` mixer on one (H, W) frame, run frame by frame."""
    B, Cx, T, H, W = x.shape
    pos = "bias" if m.rel is not None else "none"
    cfg = BlockCfg(operator="attention", width=Cx, attention="global", heads=m.heads, pos=pos)
    frame = ATTENTIONS["global"](cfg, (H, W)).eval()
    frame.load_state_dict(m.state_dict())  # norm, qkv, proj (and the (H, W) bias table)
    return torch.stack([frame(x[:, :, t]) for t in range(T)], dim=2)


def rand_clip(size, B: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(B, C, *size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pos", ["none", "bias"])
def test_temporal_attention_equals_per_position_loop(size, pos) -> None:
    m, x = mixer("temporal", size, pos=pos), rand_clip(size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), temporal_reference(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pos", ["none", "bias"])
def test_spatial_attention_equals_global_per_frame(size, pos) -> None:
    m, x = mixer("spatial", size, pos=pos), rand_clip(size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), spatial_reference(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_divided_is_temporal_then_spatial_on_the_residual(size) -> None:
    m, x = mixer("divided", size, pos="none"), rand_clip(size)
    with torch.no_grad():
        t = temporal_reference(m.time, x)
        torch.testing.assert_close(m(x), t + spatial_reference(m.space, x + t), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", SIZES)
def test_window_covering_the_clip_is_joint_global_attention(size) -> None:
    win = mixer("window", size, window=max(size), pos="learned")
    glob = mixer("global", size, pos="learned")
    glob.load_state_dict(win.state_dict())
    x = rand_clip(size)
    with torch.no_grad():
        torch.testing.assert_close(win(x), glob(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_conv_tkernel_1_is_a_2d_conv_per_frame(size) -> None:
    m, x = block("conv", size, kernel=3, tkernel=1), rand_clip(size)
    conv3 = m.mixer.conv  # weight (C, C, 1, 3, 3)
    conv2 = nn.Conv2d(C, C, 3, padding=1, bias=False)
    conv2.weight.data.copy_(conv3.weight[:, :, 0])
    B, _, T, H, W = x.shape
    frames = x.transpose(1, 2).reshape(B * T, C, H, W)  # frames in the batch
    with torch.no_grad():
        want = conv2(frames).reshape(B, T, C, H, W).transpose(1, 2)
        torch.testing.assert_close(conv3(x), want, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- mutations


def temporal_matches(size) -> bool:
    m, x = mixer("temporal", size, pos="none"), rand_clip(size)
    with torch.no_grad():
        return torch.allclose(m(x), temporal_reference(m, x), atol=1e-5, rtol=1e-5)


def test_reference_catches_temporal_attention_within_frames(monkeypatch) -> None:
    assert temporal_matches(SIZES[0])
    monkeypatch.setattr(nets.TemporalAttention, "across_frames", False)  # attends in frames
    assert not temporal_matches(SIZES[0])


def test_reference_catches_a_dropped_transpose(monkeypatch) -> None:
    def groups(self, qkv):  # (B, T, H*W, D) cut into T-token runs without the transpose
        return qkv.reshape(-1, self.size[0], qkv.shape[-1])

    def ungroup(self, o, B):
        return o.reshape(B, -1, o.shape[-1])

    monkeypatch.setattr(nets.TemporalAttention, "groups", groups)
    monkeypatch.setattr(nets.TemporalAttention, "ungroup", ungroup)
    assert not temporal_matches(SIZES[0])


def net_of(*blocks: BlockCfg) -> FusionNet:
    torch.manual_seed(0)
    cfg = NetCfg(
        in_channels=3,
        size=(4, 6, 5),
        classes=5,
        stem_width=C,
        stages=tuple(StageCfg(b) for b in blocks),
    )
    return FusionNet(cfg).eval()


PER_FRAME = [
    BlockCfg(operator="conv", width=C, tkernel=1),
    BlockCfg(operator="attention", width=C, attention="spatial", heads=2, pos="bias"),
    BlockCfg(operator="parallel", width=C, attention="spatial", heads=2, pos="none"),
]
# attention needs a position encoding to see order (without one it is permutation-equivariant)
ACROSS = {
    "temporal": BlockCfg(operator="attention", width=C, attention="temporal", pos="bias"),
    "temporal-learned": BlockCfg(operator="attention", width=C, attention="temporal"),
    "tkernel3": BlockCfg(operator="conv", width=C, tkernel=3),
    "r2plus1d": BlockCfg(operator="r2plus1d", width=C, tkernel=3),
    "divided": BlockCfg(operator="attention", width=C, attention="divided", pos="bias"),
    "global": BlockCfg(operator="attention", width=C, attention="global", pos="learned"),
    "gated-temporal": BlockCfg(operator="gated", width=C, attention="temporal", pos="bias"),
}


def shuffled_logits(net: FusionNet) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    x = torch.randn(3, 3, 4, 6, 5)
    perm = torch.tensor([2, 0, 3, 1])  # a frame order with no frame in place
    for name, p in net.named_parameters():  # position encodings start near 0: make them count
        if name.endswith(("table", ".pos")):
            p.data.normal_()
    with torch.no_grad():
        return net(x), net(x[:, :, perm])


def test_per_frame_network_cannot_see_frame_order() -> None:
    a, b = shuffled_logits(net_of(*PER_FRAME))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ACROSS))
def test_a_block_across_frames_sees_frame_order(name) -> None:
    a, b = shuffled_logits(net_of(*PER_FRAME[:1], ACROSS[name]))
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("variant", ["temporal", "divided", "global"])
def test_attention_across_frames_without_positions_cannot_see_order(variant) -> None:
    """pos="none": frames are a set to the attention, so a frame-averaged net is order-blind."""
    b = BlockCfg(operator="attention", width=C, attention=variant, pos="none")
    a, b = shuffled_logits(net_of(*PER_FRAME[:1], b))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- config errors


def net_error(size, block_cfg: BlockCfg) -> str:
    with pytest.raises(CfgError) as err:
        NetCfg(in_channels=3, size=size, classes=2, stem_width=C, stages=(StageCfg(block_cfg),))
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_temporal_attention_on_an_image_is_refused() -> None:
    msg = net_error((8, 8), BlockCfg(operator="attention", width=C, attention="temporal"))
    assert msg.startswith("stages[0].attention: 'temporal' does not take image input")
    assert "allowed for image:" in msg and "'global'" in msg and "'spatial'" not in msg


def test_tkernel_on_an_image_is_refused() -> None:
    msg = net_error((8, 8), BlockCfg(operator="conv", width=C, tkernel=3))
    assert msg.startswith("stages[0].tkernel: 3 reaches across frames") and "allowed: 1" in msg


def test_tkernel_longer_than_the_clip_is_refused() -> None:
    msg = net_error((2, 8, 8), BlockCfg(operator="conv", width=C, tkernel=3))
    assert msg.startswith("stages[0].tkernel:") and "2 frames" in msg and "allowed: odd" in msg


def test_r2plus1d_on_a_sequence_is_refused() -> None:
    msg = net_error((16,), BlockCfg(operator="r2plus1d", width=C))
    assert msg.startswith("stages[0].operator: 'r2plus1d' does not take sequence input")
    assert "allowed for sequence:" in msg and "'conv'" in msg


def test_mbconv_on_video_is_refused() -> None:
    msg = net_error((4, 8, 8), BlockCfg(operator="mbconv", width=C))
    assert msg.startswith("stages[0].operator: 'mbconv' does not take video input")
    allowed = msg.split("allowed for video: ")[1]
    assert "'r2plus1d'" in allowed and "'mbconv'" not in allowed


def test_even_tkernel_is_refused() -> None:
    with pytest.raises(CfgError, match=r"^tkernel: 2 is even; allowed: odd"):
        BlockCfg(operator="conv", width=C, tkernel=2)


def test_reference_attention_is_sdpa() -> None:
    """The hand loop's softmax attention is the one sdpa computes (guards the references)."""
    torch.manual_seed(3)
    q, k, v = torch.randn(3, 5, 4).unbind(0)
    want = F.scaled_dot_product_attention(q[None], k[None], v[None])[0]
    torch.testing.assert_close(plain_attention(q, k, v), want)
