"""fusion-nas: neural architecture search over conv/self-attention fusion strategies."""

from fusion_nas.arch import Architecture, StageChoice
from fusion_nas.cost import Cost, arch_cost, count_cost
from fusion_nas.errors import FusionNasError
from fusion_nas.export import export_code
from fusion_nas.model import FusionNet, build_model
from fusion_nas.search import SearchConfig, run_search
from fusion_nas.space import SearchSpace, builtin_spaces, load_space, parse_space
from fusion_nas.store import Store
from fusion_nas.train import ProxyConfig

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "Cost",
    "FusionNasError",
    "FusionNet",
    "ProxyConfig",
    "SearchConfig",
    "SearchSpace",
    "StageChoice",
    "Store",
    "__version__",
    "arch_cost",
    "build_model",
    "builtin_spaces",
    "count_cost",
    "export_code",
    "load_space",
    "parse_space",
    "run_search",
]
