"""Hidden-size pruning: narrow the residual stream, and every head with it, so stock configs still fit.

Stock BERT-family attention is hidden_size wide: head width = hidden_size / num_attention_heads. So
removing residual channels alone would break reloading. This pass keeps the head count and removes
the same fraction of each head's dimensions (the least important query/key/value dimensions of that
head, per torch-pruning's group importance), so that the new hidden size is heads x new head width.
The query projection is scaled by sqrt(new_width / old_width) to keep the softmax temperature the
model was trained with (the stock model divides by sqrt(head width)).

The residual channels are ranked by torch-pruning over their whole coupled group (embeddings or the
embedding projection, every LayerNorm, every residual linear). The pooler (or RoBERTa/ELECTRA head
dense, DistilBERT's pre_classifier), which stock configs also size hidden x hidden, loses its least important outputs as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from alembert.families.base import FAMILIES
from alembert.families import family, prunable_families, part, prunable_layers, record, require_family, require_float32
from compress.passes.prune import check_settings, group_scores
from alembert.compact import prune_out_channels
from compress.registry import register_pass


@dataclass(frozen=True)
class PruneHiddenConfig:
    """Remove `ratio` of the hidden size (rounded so that every head keeps the same whole width)."""

    ratio: float = 0.25
    importance: str = "magnitude"  # magnitude | taylor (taylor needs task data)
    taylor_batches: int = 4

    def __post_init__(self):
        check_settings(self, "prune_hidden")


def residual_root(model: nn.Module) -> nn.Module:
    """The first module whose output channels are the residual stream."""
    base = model.base_model
    if family(model) == "albert":
        return base.encoder.embedding_hidden_mapping_in
    if getattr(base, "embeddings_project", None) is not None:  # ELECTRA with embedding_size != hidden_size
        return base.embeddings_project
    return base.embeddings.word_embeddings


def square_head(model: nn.Module) -> nn.Linear | None:
    """The hidden x hidden dense of the classification head (BERT/ALBERT pooler, RoBERTa/ELECTRA head, DistilBERT's
    pre_classifier)."""
    if isinstance(getattr(model, "pre_classifier", None), nn.Linear):
        return model.pre_classifier
    pooler = getattr(model.base_model, "pooler", None)
    if isinstance(pooler, nn.Linear):
        return pooler
    if pooler is not None and isinstance(getattr(pooler, "dense", None), nn.Linear):
        return pooler.dense
    dense = getattr(getattr(model, "classifier", None), "dense", None)
    return dense if isinstance(dense, nn.Linear) else None


def lowest(scores: torch.Tensor, count: int) -> list[int]:
    return torch.argsort(scores)[:count].tolist()


@register_pass("prune_hidden", PruneHiddenConfig)
def prune_hidden(model: nn.Module, config: PruneHiddenConfig, *, batches=None) -> nn.Module:
    require_float32(model, "prune_hidden")
    # a fused Wqkv narrows as three interleaved blocks, which prune_hidden's torch-pruning groups do not follow
    require_family(model, tuple(name for name in prunable_families() if not FAMILIES[name].fused_qkv), "prune_hidden")
    heads, hidden = model.config.num_attention_heads, model.config.hidden_size
    width = hidden // heads
    new_width = max(1, round(width * (1 - config.ratio)))
    if new_width == width:
        return model
    layers = prunable_layers(model, "prune_hidden")
    _narrow_heads(model, layers, config, batches, heads, width, new_width)
    head_dense = square_head(model)
    roots = [residual_root(model)] + ([head_dense] if head_dense is not None else [])
    graph, scores = group_scores(model, config, batches, "prune_hidden", roots)
    for root, score in zip(roots, scores):
        prune_out_channels(graph, root, lowest(score, hidden - heads * new_width))
    model.config.hidden_size = heads * new_width
    if getattr(model.config, "embedding_size", None) == hidden and family(model) != "albert":
        model.config.embedding_size = heads * new_width  # ELECTRA without a projection: embeddings are hidden wide
    record(model, {"pass": "prune_hidden", "hidden_size": heads * new_width, "head_width": new_width})
    return model


def _narrow_heads(model, layers, config, batches, heads: int, width: int, new_width: int) -> None:
    """Keep each head's `new_width` most important query/key/value dimensions in every layer."""
    queries = [part(model, layer, "query") for layer in layers]
    graph, scores = group_scores(model, config, batches, "prune_hidden", queries)
    for layer, query, score in zip(layers, queries, scores):
        per_head = score.view(heads, width)
        dead = [h * width + int(i) for h in range(heads) for i in torch.argsort(per_head[h])[: width - new_width]]
        prune_out_channels(graph, query, dead)
        with torch.no_grad():  # the stock model divides scores by sqrt(new_width): keep the trained temperature
            query.weight.mul_(math.sqrt(new_width / width))
            query.bias.mul_(math.sqrt(new_width / width))
        attention = part(model, layer, "self_attention")
        attention.attention_head_size = new_width
        attention.all_head_size = heads * new_width
        attention.scaling = new_width**-0.5
