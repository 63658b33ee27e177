"""Physically remove the zeroed heads and zero-padded FFN neurons that head and FFN pruning leave behind.

Pruning keeps a model's shapes (so save_pretrained and from_pretrained still describe it) by zeroing what it
removes; export reads which passes did so from the model directory's compression metadata
(alembert.families.HISTORY_KEY) and compacts the model here before tracing it.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import Tensor, nn

from alembert import fused_units
from alembert.families import entry, part, prunable_families, prunable_layers, require_family, require_float32


def _example_inputs(model: nn.Module) -> dict[str, Tensor]:
    return {"input_ids": torch.arange(5, 13).clamp(max=model.config.vocab_size - 1).unsqueeze(0)}


def out_width(module: nn.Module) -> int:
    return module.embedding_dim if isinstance(module, nn.Embedding) else module.out_features


def out_pruner(module: nn.Module):
    return tp.prune_embedding_out_channels if isinstance(module, nn.Embedding) else tp.prune_linear_out_channels


def output_tensors(outputs) -> list[Tensor]:
    """Every tensor a Hugging Face forward returns (logits, or a QA head's start and end logits), whatever the head:
    torch-pruning traces its dependency graph back from each, so no head output is left out of it."""
    return [value for value in outputs.values() if isinstance(value, Tensor)]


def dependency_graph(model: nn.Module) -> tp.DependencyGraph:
    return tp.DependencyGraph().build_dependency(model, example_inputs=_example_inputs(model),
                                                 output_transform=output_tensors)


def prune_out_channels(graph: tp.DependencyGraph, root: nn.Module, idxs: list[int]) -> None:
    """Remove output channels `idxs` of `root` and everything torch-pruning finds coupled to them."""
    if idxs:
        graph.get_pruning_group(root, out_pruner(root), idxs=idxs).prune()


def _dead_heads(model: nn.Module, layer: nn.Module) -> list[int]:
    attention = part(model, layer, "self_attention")
    rows = torch.stack([part(model, layer, role).weight.abs().sum(dim=1) + part(model, layer, role).bias.abs()
                        for role in ("query", "key", "value")]).sum(dim=0)
    per_head = rows.view(-1, attention.attention_head_size).sum(dim=1)
    dead = [h for h in range(len(per_head)) if per_head[h] == 0]
    return dead[: len(per_head) - 1]


def _dead_neurons(model: nn.Module, layer: nn.Module) -> list[int]:
    inner = part(model, layer, "ffn_in")
    alive = inner.weight.abs().sum(dim=1) + inner.bias.abs() + part(model, layer, "ffn_out").weight.abs().sum(dim=0)
    dead = [i for i in range(len(alive)) if alive[i] == 0]
    return dead[: len(alive) - 1]


def _cut_dead_heads(model: nn.Module, layer: nn.Module, graph: tp.DependencyGraph) -> None:
    attention = part(model, layer, "self_attention")
    width = attention.attention_head_size
    dead = _dead_heads(model, layer)
    prune_out_channels(graph, part(model, layer, "query"), [h * width + i for h in dead for i in range(width)])
    heads = getattr(attention, entry(model).head_count_attr) - len(dead)
    setattr(attention, entry(model).head_count_attr, heads)
    attention.all_head_size = heads * width


def compact_for_export(model: nn.Module) -> nn.Module:
    """Physically remove zeroed heads and padded FFN neurons, layer by layer, for an in-memory export.

    The result computes the same logits with fewer weights, and layers may then differ in head and FFN
    counts, which stock configs cannot describe: export it (ONNX) or run it, but do not save_pretrained it.
    """
    require_family(model, prunable_families(), "compact_for_export")
    require_float32(model, "compact_for_export")
    layers = prunable_layers(model, "compact_for_export")
    family = entry(model)
    graph = None if family.gated_ffn else dependency_graph(model)  # fused layouts are cut by alembert.fused_units
    for layer in layers:
        if family.compact_heads:
            _cut_dead_heads(model, layer, graph)
        if family.gated_ffn:
            dead = set(fused_units.dead_neurons(model, layer))
            width = part(model, layer, "ffn_in").out_features // 2
            fused_units.keep_neurons(model, layer, [j for j in range(width) if j not in dead])
        else:
            prune_out_channels(graph, part(model, layer, "ffn_in"), _dead_neurons(model, layer))
    model.alembert_compact = True  # save_compressed refuses it: its shapes no longer match its config
    return model
