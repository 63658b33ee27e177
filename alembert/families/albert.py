"""ALBERT: layers are shared groups (no per-layer list), each group's one layer holding the parts passes edit."""

from types import MappingProxyType

from torch import nn

from alembert.families.base import Family, register


def group_layers(model: nn.Module) -> list[nn.Module]:
    """Each shared group's layer, once: pruning it prunes every layer that shares it."""
    return [group.albert_layers[0] for group in model.albert.encoder.albert_layer_groups]


register(Family("albert", layers=None, value_suffix=".attention.value", attention_suffix=".attention",
                parts=MappingProxyType({"self_attention": "attention", "query": "attention.query", "key": "attention.key",
                       "value": "attention.value", "attention_out": "attention.dense", "ffn_in": "ffn",
                       "ffn_out": "ffn_output"}),
                prunable=group_layers))
