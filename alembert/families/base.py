"""One entry per model family, keyed by `model_type`: where its layers and the parts passes edit live, and the
few ways it differs from BERT. Each family's entry is in its own module of this package (bert.py, roberta.py, ...);
the registry imports them on first lookup, so adding a family is one new module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import nn

from alembert.registry import Registry

# BERT's layer: `attention.self.{query,key,value}`, `attention.output.dense`, `intermediate.dense`, `output.dense`.
BERT_PARTS = MappingProxyType({
    "self_attention": "attention.self", "query": "attention.self.query", "key": "attention.self.key",
    "value": "attention.self.value", "attention_out": "attention.output.dense",
    "ffn_in": "intermediate.dense", "ffn_out": "output.dense"})
# BERT's layer modules under the names ALBERT gives them in its shared layer (AlbertLayer).
BERT_TO_ALBERT = MappingProxyType({
    "attention.self.query": "attention.query", "attention.self.key": "attention.key",
    "attention.self.value": "attention.value", "attention.output.dense": "attention.dense",
    "attention.output.LayerNorm": "attention.LayerNorm", "intermediate.dense": "ffn", "output.dense": "ffn_output",
    "output.LayerNorm": "full_layer_layer_norm"})


@dataclass(frozen=True)
class AlbertSource:
    """How the ALBERT converter (compress/albert.py, behind share_layers and factorize_embeddings) reads a family.

    Its post-LayerNorm layers map one-to-one onto ALBERT's; where its sequence head puts another activation than
    ALBERT's tanh pooler between its two dense layers, the converter refits the head on task rows (measured, never exact).
    """

    layer_keys: Mapping[str, str] = field(default_factory=lambda: BERT_TO_ALBERT)  # module path in one layer -> its path in ALBERT's shared layer
    config_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # ALBERT config key -> this family's, where they differ
    token_types: bool = True  # False: the family reads no segment ids, so ALBERT gets an all-zero segment table
    projection: str | None = None  # the module taking E-wide embeddings to the hidden width, where there is one
    head: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # sequence-head key prefixes -> ALBERT's (pooler, classifier)
    head_activation: str = "tanh"  # the sequence head's activation; ALBERT's pooler has tanh


@dataclass(frozen=True)
class Family:
    """What alembert knows of one model family. Paths are relative to `model.base_model`, parts to one layer."""

    model_type: str
    layers: str | None  # the layer ModuleList (None: layers are shared groups, e.g. ALBERT; layer-list passes refuse it)
    layer_count_key: str = "num_hidden_layers"
    ffn_key: str = "intermediate_size"  # the config key of the FFN width
    parts: Mapping[str, str] | None = None  # pruning roles -> module paths in a layer; None: head/FFN passes refuse it
    head_count_attr: str = "num_attention_heads"  # the self-attention module's own count of heads
    # zeroed heads can be cut out for export; False where a per-head table shared by all layers (MPNet's relative
    # position bias) fixes every layer's head count: pruned heads then stay in the graph as zeros
    compact_heads: bool = True
    value_suffix: str = ".attention.self.value"  # the value projection MiniLM's value relation hooks
    fused_qkv: bool = False  # the value_suffix module projects query, key and value at once (values: its last third)
    gated_ffn: bool = False  # ffn_in's output is every neuron's input half, then its gate half (alembert.fused_units)
    per_layer_keys: tuple[str, ...] = ()  # config lists with one entry per layer (ModernBERT's layer_types)
    attention_suffix: str = ".attention.self"  # the modules whose attention dropout layer-wise terms switch off
    attention: str = "sdpa"  # the fastest attention its transformers classes take (eager, which alone returns maps, is asked for those)
    positions_after_padding: bool = False  # RoBERTa numbers positions from pad_token_id + 1
    transformer: bool = True  # False: a non-transformer student (alembert/students/), never a teacher
    albert: AlbertSource | None = None  # how the ALBERT converter reads it; None: share_layers/factorize refuse it
    # onnxruntime's transformer optimizer model_type whose fusions fit this family's graph; None: it has none
    ort_model_type: str | None = "bert"
    # the distinct layers head/FFN passes edit; None: the layer list
    prunable: Callable[[nn.Module], list[nn.Module]] | None = field(default=None, compare=False)

    def keep_layers(self, config, kept: list[int]) -> None:
        """Set `config`'s layer count, and its per-layer lists, to the layers `kept` (indices into the old ones)."""
        for key in self.per_layer_keys:
            values = getattr(config, key, None)
            if values is not None:
                setattr(config, key, [values[index] for index in kept])
        setattr(config, self.layer_count_key, len(kept))

    def position_offset(self, config) -> int:
        """How many position rows come before the first real token's."""
        return int(config.pad_token_id or 0) + 1 if self.positions_after_padding else 0


FAMILIES: Registry[Family] = Registry("model family", package="alembert.families")


def register(entry: Family) -> Family:
    """Register a family under its model_type; a second registration of the name is refused."""
    return FAMILIES.add(entry.model_type, entry)


def supporting(flag: str) -> tuple[str, ...]:
    """The model types whose entry sets `flag` (a field that is truthy): e.g. supporting("parts")."""
    return tuple(name for name, entry in FAMILIES.items() if getattr(entry, flag))
