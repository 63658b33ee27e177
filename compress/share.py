"""ALBERT-style cross-layer parameter sharing: the model becomes a Hugging Face ALBERT with G groups."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.albert import to_albert
from compress.families import record, require_float32
from compress.registry import register_pass


@dataclass(frozen=True)
class ShareLayersConfig:
    """Share weights across layers in `groups` contiguous groups (ALBERT's num_hidden_groups).

    init: mean (average of the group's layers) | first (the group's first layer).
    groups equal to the number of layers converts exactly, without sharing.
    """

    groups: int = 1
    init: str = "mean"


@register_pass("share_layers", ShareLayersConfig)
def share_layers(model: nn.Module, config: ShareLayersConfig, *, batches=None) -> nn.Module:
    require_float32(model, "share_layers")
    shared = to_albert(model, config.groups, config.init)
    record(shared, {"pass": "share_layers", "groups": config.groups, "init": config.init, "from": model.config.model_type})
    return shared
