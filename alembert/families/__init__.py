"""What each pass needs to know about a model: its family, where its layers live, and its state.

Family knowledge is one registry entry per family (alembert/families/<family>.py, base.Family); the functions
here answer from the entry, so no stage keeps its own table of families. Only the ALBERT converter knows more.
"""

from __future__ import annotations

from torch import nn

from alembert.errors import fail
from alembert.families.base import FAMILIES, Family, supporting

# The compression metadata in config.json, versioned: `alembert_compression` lists one entry per pass in order,
# {"pass": name, ...its settings, "leaves_zeroed": true when it zeroed structure a stock config cannot drop (export
# compacts the model then)}; `alembert_compression_version` is HISTORY_VERSION. compress writes it, compress.saving
# and export read it.
HISTORY_KEY = "alembert_compression"
HISTORY_VERSION_KEY, HISTORY_VERSION = "alembert_compression_version", 1


def family(model: nn.Module) -> str:
    return getattr(model.config, "model_type", type(model).__name__)


def entry(model: nn.Module) -> Family:
    """The model's registry entry; an unknown family is one line naming the known ones."""
    name = family(model)
    if name not in FAMILIES:
        raise fail(f"alembert does not support the '{name}' model family", f"use one of: {', '.join(FAMILIES.names())}")
    return FAMILIES[name]


def require_family(model: nn.Module, supported: tuple[str, ...], what: str) -> str:
    name = family(model)
    if name not in supported:
        raise fail(f"{what} does not support the '{name}' model family", f"it supports: {', '.join(supported)}")
    return name


def transformer_families() -> tuple[str, ...]:
    """The families a teacher can come from (every entry but the non-transformer students')."""
    return supporting("transformer")


def with_layer_list() -> tuple[str, ...]:
    return supporting("layers")


def prunable_families() -> tuple[str, ...]:
    """Families whose entry names the parts head and FFN pruning edit."""
    return supporting("parts")


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
    require_family(model, with_layer_list(), what)
    return model.base_model.get_submodule(entry(model).layers)


def replace_layer_list(model: nn.Module, layers: nn.ModuleList) -> None:
    """Put `layers` where the family keeps its layer list (the config's layer count is the caller's to set)."""
    require_family(model, with_layer_list(), "replacing the layer list")
    parent, _, attribute = entry(model).layers.rpartition(".")
    setattr(model.base_model.get_submodule(parent) if parent else model.base_model, attribute, layers)


def prunable_layers(model: nn.Module, what: str) -> list[nn.Module]:
    """The distinct layers whose heads and FFN a pruning pass edits (an ALBERT model's shared groups once each)."""
    require_family(model, prunable_families(), what)
    found = entry(model)
    return found.prunable(model) if found.prunable is not None else list(model.base_model.get_submodule(found.layers))


def part(model: nn.Module, layer: nn.Module, role: str) -> nn.Module:
    return layer.get_submodule(entry(model).parts[role])


def replace_part(model: nn.Module, layer: nn.Module, role: str, module: nn.Module) -> None:
    parent, _, attribute = entry(model).parts[role].rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, attribute, module)




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
