"""ALBERT-style cross-layer parameter sharing: the model becomes a Hugging Face ALBERT with G groups."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.albert import INIT_MODES, to_albert
from alembert.families import record, require_float32
from compress.registry import register_pass
from alembert.errors import fail


@dataclass(frozen=True)
class ShareLayersConfig:
    """Share weights across layers in `groups` contiguous groups (ALBERT's num_hidden_groups).

    init: mean (average of the group's layers) | first (the group's first layer).
    groups equal to the number of layers converts exactly, without sharing.
    """

    groups: int = 1
    init: str = "mean"

    def __post_init__(self):
        if self.init not in INIT_MODES:
            raise fail(f"share_layers.init={self.init} is unknown", f"use one of {', '.join(INIT_MODES)}")
        if self.groups < 1:
            raise fail(f"share_layers.groups={self.groups} must be at least 1", "use 1 (ALBERT) up to the number of layers")


@register_pass("share_layers", ShareLayersConfig)
def share_layers(model: nn.Module, config: ShareLayersConfig, *, batches=None) -> nn.Module:
    require_float32(model, "share_layers")
    shared, head = to_albert(model, config.groups, config.init, batches=batches)
    record(shared, {"pass": "share_layers", "groups": config.groups, "init": config.init, "from": model.config.model_type, **head})
    return shared
