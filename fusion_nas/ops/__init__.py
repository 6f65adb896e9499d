"""Searchable operators; each keeps the map shape and is created by name through the registry."""

from fusion_nas.ops.attention import ATTENTION_VARIANTS, AttentionBlock, AttentionMixer
from fusion_nas.ops.conv import ConvBlock, ConvMixer
from fusion_nas.ops.gated import GatedBlock
from fusion_nas.ops.parallel import FUSION_INIT, ParallelBlock
from fusion_nas.ops.registry import create_op, get_op, list_ops, op_uses, register_op

__all__ = [
    "ATTENTION_VARIANTS",
    "FUSION_INIT",
    "AttentionBlock",
    "AttentionMixer",
    "ConvBlock",
    "ConvMixer",
    "GatedBlock",
    "ParallelBlock",
    "create_op",
    "get_op",
    "list_ops",
    "op_uses",
    "register_op",
]
