"""fusion-nas: neural architecture search over conv/self-attention fusion strategies."""

from fusion_nas.arch import Architecture, StageChoice
from fusion_nas.cost import Cost, count_cost
from fusion_nas.errors import FusionNasError
from fusion_nas.model import FusionNet, build_model
from fusion_nas.space import SearchSpace, builtin_spaces, load_space, parse_space

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "Cost",
    "FusionNasError",
    "FusionNet",
    "SearchSpace",
    "StageChoice",
    "__version__",
    "build_model",
    "builtin_spaces",
    "count_cost",
    "load_space",
    "parse_space",
]
