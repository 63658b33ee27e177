"""Compression passes: each is a frozen config dataclass with one registered handler, `apply(model, config)`.

Importing the package registers every pass; `run_pipeline` runs a list of them with a report row per step.
"""

from compress.passes.factorize import FactorizeEmbeddingsConfig
from compress.saving import load_compressed, save_compressed
from compress.passes.layers import DropLayersConfig
from compress.pipeline import RecoveryConfig, Step, TaskLoaders, run_pipeline
from compress.passes.prune import PruneFfnConfig, PruneHeadsConfig
from compress.passes.quantize import CastConfig, QuantizeDynamicConfig
from compress.registry import apply, config_from_name, pass_names
from compress.passes.share import ShareLayersConfig
from compress.passes.sparsity import SparsityConfig

__all__ = [
    "CastConfig", "DropLayersConfig", "FactorizeEmbeddingsConfig", "PruneFfnConfig", "PruneHeadsConfig",
    "QuantizeDynamicConfig", "RecoveryConfig", "ShareLayersConfig", "SparsityConfig", "Step", "TaskLoaders",
    "apply", "config_from_name", "load_compressed", "pass_names", "run_pipeline", "save_compressed",
]
