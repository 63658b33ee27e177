"""What each pass needs to know about a model: its family, where its layers live, and its state.

Only this module (and the ALBERT converter) knows the module layout of each family.
"""

from __future__ import annotations

from torch import nn

from alembert.errors import fail

# Families whose layers are `encoder.layer[i]` with `attention.self.{query,key,value}`,
# `attention.output.dense`, `intermediate.dense` and `output.dense`.
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra")
# Families the ALBERT converter maps exactly (their classifier heads have an ALBERT equivalent).
ALBERT_SOURCES = ("bert", "roberta", "xlm-roberta")
ROBERTA_LIKE = ("roberta", "xlm-roberta")
# Where the list of layers lives, and the config key that counts them.
LAYER_LISTS = {
    **{family: ("encoder.layer", "num_hidden_layers") for family in BERT_LIKE},
    "distilbert": ("transformer.layer", "n_layers"),
}
# Where each family keeps the pieces structured pruning edits, relative to one layer.
LAYER_PARTS = {
    **{family: {"self_attention": "attention.self", "query": "attention.self.query", "key": "attention.self.key",
                "value": "attention.self.value", "attention_out": "attention.output.dense",
                "ffn_in": "intermediate.dense", "ffn_out": "output.dense"} for family in BERT_LIKE},
    "albert": {"self_attention": "attention", "query": "attention.query", "key": "attention.key", "value": "attention.value",
               "attention_out": "attention.dense", "ffn_in": "ffn", "ffn_out": "ffn_output"},
}
# The compression metadata in config.json, versioned: `alembert_compression` lists one entry per pass in order,
# {"pass": name, ...its settings, "leaves_zeroed": true when it zeroed structure a stock config cannot drop (export
# compacts the model then)}; `alembert_compression_version` is HISTORY_VERSION. compress writes it, compress.saving
# and export read it.
HISTORY_KEY = "alembert_compression"
HISTORY_VERSION_KEY, HISTORY_VERSION = "alembert_compression_version", 1


def family(model: nn.Module) -> str:
    return getattr(model.config, "model_type", type(model).__name__)


def require_family(model: nn.Module, supported: tuple[str, ...], what: str) -> str:
    name = family(model)
    if name not in supported:
        raise fail(f"{what} does not support the '{name}' model family", f"it supports: {', '.join(supported)}")
    return name


def is_quantized(model: nn.Module) -> bool:
    return any("quantized" in type(module).__module__ for module in model.modules())


def float_dtype(model: nn.Module):
    parameters = [p for p in model.parameters() if p.is_floating_point()]
    return parameters[0].dtype if parameters else None


def require_float32(model: nn.Module, what: str) -> None:
    """Passes that edit weights need full-precision float weights: refuse int8 or half models clearly."""
    if is_quantized(model):
        raise fail(f"{what} cannot run on a model that is already int8-quantized",
                   "put quantize_dynamic last in the pass list")
    dtype = float_dtype(model)
    if dtype is not None and dtype != __import__("torch").float32:
        raise fail(f"{what} needs float32 weights but the model is {dtype}", "put the cast pass last in the pass list")


def layer_list(model: nn.Module, what: str) -> nn.ModuleList:
    name = require_family(model, tuple(LAYER_LISTS), what)
    path, _ = LAYER_LISTS[name]
    return model.base_model.get_submodule(path)


def replace_layer_list(model: nn.Module, layers: nn.ModuleList) -> None:
    """Put `layers` where the family keeps its layer list (the config's layer count is the caller's to set)."""
    path, _ = LAYER_LISTS[require_family(model, tuple(LAYER_LISTS), "replacing the layer list")]
    parent, _, attribute = path.rpartition(".")
    setattr(model.base_model.get_submodule(parent), attribute, layers)


def prunable_layers(model: nn.Module, what: str) -> list[nn.Module]:
    """The distinct layers whose heads and FFN a pruning pass edits (an ALBERT model's shared groups once each)."""
    name = require_family(model, tuple(LAYER_PARTS), what)
    if name == "albert":
        return [group.albert_layers[0] for group in model.albert.encoder.albert_layer_groups]
    return list(model.base_model.encoder.layer)


def part(model: nn.Module, layer: nn.Module, role: str) -> nn.Module:
    return layer.get_submodule(LAYER_PARTS[family(model)][role])


def replace_part(model: nn.Module, layer: nn.Module, role: str, module: nn.Module) -> None:
    parent, _, attribute = LAYER_PARTS[family(model)][role].rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, attribute, module)


def set_layer_count(model: nn.Module, count: int) -> None:
    _, key = LAYER_LISTS[family(model)]
    setattr(model.config, key, count)


def record(model: nn.Module, entry: dict) -> None:
    """Append what a pass did to config.alembert_compression, so the saved config.json tells the story."""
    history = list(getattr(model.config, HISTORY_KEY, None) or [])
    history.append(entry)
    setattr(model.config, HISTORY_KEY, history)
    setattr(model.config, HISTORY_VERSION_KEY, HISTORY_VERSION)


def history(model: nn.Module) -> list[dict]:
    return list(getattr(model.config, HISTORY_KEY, None) or [])


def mark_last_entry(model: nn.Module, **flags) -> None:
    """Add flags (e.g. leaves_zeroed=True) to the newest history entry: what the registry knows of the pass."""
    entries = history(model)
    if entries:
        entries[-1] = {**entries[-1], **flags}
        setattr(model.config, HISTORY_KEY, entries)


def check_ratio(value: float, key: str) -> None:
    if not 0.0 <= value < 1.0:
        raise fail(f"{key}={value} is outside [0, 1)", f"set {key} to the fraction to remove, e.g. 0.25 (1 would remove everything)")
