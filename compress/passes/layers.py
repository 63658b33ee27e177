"""Layer dropping: keep a subset of the encoder layers and update the config to match."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from alembert.families import entry, layer_list, record, replace_layer_list, require_float32
from compress.registry import register_pass
from alembert.errors import fail


@dataclass(frozen=True)
class DropLayersConfig:
    """Which layers to remove: the top `count` (nearest the output), every other one, an explicit list, or all but `depth`.

    strategy: top | alternate | explicit | depth. `alternate` drops layers 1, 3, 5, ... (keeping the first): LayerDrop's
    "every other" pruning at rate 0.5. `depth` keeps `depth` layers spread evenly, layers floor(i * N / depth) for
    i < depth: LayerDrop's every-other rule (Fan et al. 2019, drop depth d when d = 0 mod floor(1/p), 1-based) wherever
    that rule is defined (depth >= N/2), and the same even spread below it. A LayerDrop-trained model cut this way
    needs no retraining (train.layerdrop).
    """

    strategy: str = "top"
    count: int = 1
    layers: tuple[int, ...] = ()
    depth: int | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise fail(f"drop_layers.strategy={self.strategy} is unknown", f"use one of {', '.join(STRATEGIES)}")
        if self.strategy == "explicit" and not self.layers:
            raise fail("drop_layers.strategy=explicit needs drop_layers.layers", "list the layers to drop, e.g. layers=[0,2]")
        if self.strategy == "depth" and self.depth is None:
            raise fail("drop_layers.strategy=depth needs drop_layers.depth", "give the number of layers to keep, e.g. depth=3")


def _top(total: int, config: DropLayersConfig) -> list[int]:
    if not 0 <= config.count < total:
        raise fail(f"drop_layers.count={config.count} must be between 0 and {total - 1} for a {total}-layer model",
                   "keep at least one layer")
    return list(range(total - config.count, total))


def _alternate(total: int, config: DropLayersConfig) -> list[int]:
    return list(range(1, total, 2))


def _explicit(total: int, config: DropLayersConfig) -> list[int]:
    bad = [i for i in config.layers if not 0 <= i < total]
    if bad:
        raise fail(f"drop_layers.layers names {bad} but the model has layers 0..{total - 1}", f"pick layers between 0 and {total - 1}")
    if len(set(config.layers)) >= total:
        raise fail(f"drop_layers.layers would remove all {total} layers", "keep at least one layer")
    return sorted(set(config.layers))


def _depth(total: int, config: DropLayersConfig) -> list[int]:
    if not 1 <= config.depth <= total:
        raise fail(f"drop_layers.depth={config.depth} must be between 1 and {total} for a {total}-layer model",
                   f"keep between 1 and {total} layers")
    kept = {i * total // config.depth for i in range(config.depth)}
    return [i for i in range(total) if i not in kept]


STRATEGIES = {"top": _top, "alternate": _alternate, "explicit": _explicit, "depth": _depth}


def layers_to_drop(total: int, config: DropLayersConfig) -> list[int]:
    return STRATEGIES[config.strategy](total, config)


@register_pass("drop_layers", DropLayersConfig)
def drop_layers(model: nn.Module, config: DropLayersConfig, *, batches=None) -> nn.Module:
    require_float32(model, "drop_layers")
    layers = layer_list(model, "drop_layers")
    dropped = set(layers_to_drop(len(layers), config))
    kept = [layer for i, layer in enumerate(layers) if i not in dropped]
    for index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index  # keeps cache indexing consistent with the new positions
    replace_layer_list(model, nn.ModuleList(kept))
    entry(model).keep_layers(model.config, [i for i in range(len(layers)) if i not in dropped])
    record(model, {"pass": "drop_layers", "dropped": sorted(dropped), "layers": len(kept)})
    return model
