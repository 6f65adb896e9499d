"""Operators: block configs and the registry, over :mod:`fusion_nas.nets` where they live."""

from fusion_nas.nets import (
    ATTENTIONS,
    FUSION_INIT,
    OPS,
    SEARCHABLE,
    BlockCfg,
    CfgError,
    NetCfg,
    StageCfg,
    register_attention,
    register_op,
)
from fusion_nas.ops.registry import (
    block_cfg,
    create_op,
    get_op,
    list_attentions,
    list_ops,
    op_uses,
)

__all__ = [
    "ATTENTIONS",
    "FUSION_INIT",
    "OPS",
    "SEARCHABLE",
    "BlockCfg",
    "CfgError",
    "NetCfg",
    "StageCfg",
    "block_cfg",
    "create_op",
    "get_op",
    "list_attentions",
    "list_ops",
    "op_uses",
    "register_attention",
    "register_op",
]
