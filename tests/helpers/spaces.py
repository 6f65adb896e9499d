"""Search spaces (TOML text) that more than one test module uses."""

from __future__ import annotations

# 3 x 4 = 12 networks: small enough for a search to visit all of them.
TINY = """
name = "tiny"
[input]
kind = "sequence"
length = 16
channels = 1
classes = 4
[network]
mlp_ratio = 0
[stem]
width = 4
kernel = 3
stride = 2
[[stage]]
operator = ["conv", "attention"]
kernel = [3]
attention = ["channel"]
width = [4, 8]
[[stage]]
operator = ["conv", "gated"]
kernel = [3]
attention = ["channel"]
width = [8]
depth = [0, 1]
downsample = "conv"
"""


# Same name and input, one more width: another space.
OTHER = TINY.replace("width = [4, 8]", "width = [4, 8, 16]")


VOCAB = """
name = "vocab"
[input]
kind = "sequence"
length = 40
channels = 1
classes = 10
[network]
mlp_ratio = 2.0
[stem]
width = 4
kernel = 5
stride = 2
[[stage]]
operator = ["conv", "gated"]
kernel = [3]
heads = [1, 2]
attention = ["global", "channel"]
mlp_ratio = [0, 1]
width = [4, 8]
depth = [0, 1]
downsample = ["none", "pool", "conv"]
[[stage]]
operator = "attention"
attention = "channel"
width = 8
downsample = "conv"
"""
