"""The model of an architecture: :class:`~fusion_nas.model.nets.FusionNet` of the space's config.

The network itself (stem, stages, operators, head) lives in :mod:`fusion_nas.model.nets`; a space
turns an architecture into its :class:`~fusion_nas.model.nets.NetCfg` (:meth:`SearchSpace.net_cfg`).
"""

from __future__ import annotations

from fusion_nas.model.arch import Architecture
from fusion_nas.model.nets import FusionNet
from fusion_nas.model.space import SearchSpace, load_space

__all__ = ["FusionNet", "build_model"]


def build_model(arch: Architecture, space: SearchSpace | None = None) -> FusionNet:
    """The ``nn.Module`` of ``arch``; the space defaults to the built-in one it names.

    The model remembers its architecture as ``model.arch``.
    """
    space = space if space is not None else load_space(arch.space)
    model = FusionNet(space.net_cfg(arch))
    model.arch = arch
    return model
