"""Structured pruning of attention heads and FFN neurons, with torch-pruning's dependency graph and importance.

How pruned models stay loadable by stock transformers classes:

* FFN neurons are physically removed. With per-layer selection every layer keeps the same count and
  `config.intermediate_size` is simply the new width. With global selection layers end uneven; each
  layer is then zero-padded back to the largest remaining count (zero rows in `intermediate.dense`,
  zero columns in `output.dense`; GELU(0) = 0, so padded neurons add exactly nothing). The model
  reloads exactly, at the price of computing the padded neurons.
* Attention heads are zeroed in place (query/key/value rows and biases and the `attention.output.dense`
  columns of the head). Stock BERT-family classes derive the head width as hidden_size /
  num_attention_heads and size the output projection hidden x hidden, so a layer with fewer heads than
  hidden_size / head_dim cannot be written in a stock config at all. A zero head contributes exactly
  zero (its value vectors are zero), so logits are those of the pruned model. The zeroed weights stay
  in the saved model (`nonzero_params` in the report counts what is left); `compact_for_export`
  removes them, and the padded FFN neurons, from an in-memory model just before ONNX export.
  Use prune_hidden for a saved model that is really smaller: it narrows every head instead.

Importance is torch-pruning's group importance (L2 weight magnitude, or first-order Taylor |w * dL/dw|
over a few task batches, with L the hard loss of the model's own task: per labelled token for a token
classifier); scores are normalised per group, so global selection compares layers fairly.
Every layer keeps at least its best head and its best neuron. Only encoder units are roots of what is
removed, so the task head (`classifier`, `qa_outputs`) keeps every output: tags, labels or span ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn

from alembert.families import (check_ratio, entry, prunable_families, part, prunable_layers, record, replace_part, require_family,
    require_float32)
from compress.registry import register_pass
from alembert import fused_units
from alembert.compact import out_pruner, out_width, dependency_graph, prune_out_channels
from alembert.errors import fail
from alembert.modeldir import MODEL_INPUTS
from alembert.tasks import task_of

# name -> (torch-pruning scorer factory, whether it reads task-loss gradients)
IMPORTANCE = {
    "magnitude": (lambda: tp.importance.GroupMagnitudeImportance(p=2), False),
    "taylor": (tp.importance.GroupTaylorImportance, True),
}


@dataclass(frozen=True)
class PruneHeadsConfig:
    """Remove `ratio` of the attention heads (per layer, or across all layers when scope=global)."""

    ratio: float = 0.25
    importance: str = "magnitude"  # magnitude | taylor (taylor needs task data)
    scope: str = "per_layer"  # per_layer | global
    taylor_batches: int = 4

    def __post_init__(self):
        check_settings(self, "prune_heads")


@dataclass(frozen=True)
class PruneFfnConfig:
    """Remove `ratio` of the FFN intermediate neurons (per layer, or across all layers when scope=global)."""

    ratio: float = 0.25
    importance: str = "magnitude"
    scope: str = "per_layer"
    taylor_batches: int = 4

    def __post_init__(self):
        check_settings(self, "prune_ffn")


def check_settings(config, what: str) -> None:
    """Fail at config time, before any model is loaded, on a bad ratio, importance or scope."""
    check_ratio(config.ratio, f"{what}.ratio")
    for key, value, valid in (("importance", config.importance, IMPORTANCE), ("scope", getattr(config, "scope", None), SCOPES)):
        if value is not None and value not in valid:
            raise fail(f"{what}.{key}={value} is unknown", f"use one of {', '.join(valid)}")
    if config.taylor_batches < 1:
        raise fail(f"{what}.taylor_batches={config.taylor_batches} must be at least 1", "use a few batches, e.g. 4")


def check_model(model: nn.Module, what: str) -> None:
    require_float32(model, what)
    require_family(model, prunable_families(), what)


def _accumulate_taylor_gradients(model: nn.Module, batches: Iterable[dict] | None, count: int, what: str) -> None:
    """Fill .grad with the task-loss gradient over `count` batches, which Taylor importance reads."""
    if batches is None:
        raise fail(f"{what}.importance=taylor needs task data", "give data=... (train split is used) or use importance=magnitude")
    model.eval()  # no dropout: the gradient should describe the deterministic model
    model.zero_grad(set_to_none=True)
    task = task_of(model.config)  # the task the head was trained for: its own loss (token labels skip -100)
    used = 0
    for batch in batches:
        if used == count:
            break
        inputs = {key: value for key, value in batch.items() if key in MODEL_INPUTS}
        task.hard_loss(task.output_logits(model(**inputs)), batch["labels"]).backward()
        used += 1
    if used == 0:
        raise fail(f"{what}.importance=taylor got no batches of task data", "give a non-empty training set")
    if not any(p.grad is not None and p.grad.any() for p in model.parameters()):  # scores would be 0/0 = NaN
        raise fail(f"{what}.importance=taylor got no gradient from {used} batch(es): none has a labelled row or token",
                   f"raise {what}.taylor_batches, check the labels, or use importance=magnitude")


def group_scores(model: nn.Module, config, batches, what: str, roots: list[nn.Module]) -> tuple[tp.DependencyGraph, list[Tensor]]:
    """Importance of each output channel of each root, over its whole torch-pruning dependency group."""
    graph = dependency_graph(model)
    make_scorer, needs_gradients = IMPORTANCE[config.importance]
    if needs_gradients:
        _accumulate_taylor_gradients(model, batches, config.taylor_batches, what)
    scorer = make_scorer()
    scores = []
    for root in roots:
        group = graph.get_pruning_group(root, out_pruner(root), idxs=list(range(out_width(root))))
        scores.append(scorer(group).detach().float())
    model.zero_grad(set_to_none=True)
    return graph, scores


def _lowest_per_layer(scores: list[Tensor], ratio: float) -> list[list[int]]:
    return [torch.argsort(s)[: min(math.floor(ratio * len(s)), len(s) - 1)].tolist() for s in scores]


def _lowest_overall(scores: list[Tensor], ratio: float) -> list[list[int]]:
    budget = math.floor(ratio * sum(len(s) for s in scores))
    ranked = sorted((float(value), layer, unit) for layer, s in enumerate(scores) for unit, value in enumerate(s.tolist()))
    removed: list[list[int]] = [[] for _ in scores]
    for _, layer, unit in ranked:
        if budget == 0:
            break
        if len(removed[layer]) < len(scores[layer]) - 1:  # keep each layer's best unit
            removed[layer].append(unit)
            budget -= 1
    return removed


SCOPES = {"per_layer": _lowest_per_layer, "global": _lowest_overall}


def select_units(scores: list[Tensor], ratio: float, scope: str) -> list[list[int]]:
    """Indices to remove per layer: the lowest-scoring `ratio` of units, never a layer's last one."""
    return SCOPES[scope](scores, ratio)


@register_pass("prune_heads", PruneHeadsConfig, leaves_zeroed=True)
def prune_heads(model: nn.Module, config: PruneHeadsConfig, *, batches=None) -> nn.Module:
    check_model(model, "prune_heads")
    layers = prunable_layers(model, "prune_heads")
    heads = model.config.num_attention_heads
    fused = entry(model).fused_qkv
    if fused:
        head_scores = fused_scores(model, layers, config, batches, "prune_heads", fused_units.head_scores)
    else:
        _, scores = group_scores(model, config, batches, "prune_heads", [part(model, layer, "query") for layer in layers])
        head_scores = [s.view(heads, -1).sum(dim=1) for s in scores]
    removed = select_units(head_scores, config.ratio, config.scope)
    for layer, dead in zip(layers, removed):
        (fused_units.zero_heads if fused else zero_heads)(model, layer, dead)
    kept = [heads - len(dead) for dead in removed]
    record(model, {"pass": "prune_heads", "heads_per_layer": kept, "removed": removed})
    return model


@torch.no_grad()
def zero_heads(model: nn.Module, layer: nn.Module, dead: list[int]) -> None:
    """Zero a layer's heads `dead`: their q/k/v rows and biases, and their columns of the output projection."""
    width = part(model, layer, "self_attention").attention_head_size
    rows = torch.tensor([h * width + i for h in dead for i in range(width)], dtype=torch.long)
    if len(rows) == 0:
        return
    for role in ("query", "key", "value"):
        linear = part(model, layer, role)
        linear.weight[rows] = 0
        linear.bias[rows] = 0
    part(model, layer, "attention_out").weight[:, rows] = 0


@register_pass("prune_ffn", PruneFfnConfig, leaves_zeroed=True)
def prune_ffn(model: nn.Module, config: PruneFfnConfig, *, batches=None) -> nn.Module:
    check_model(model, "prune_ffn")
    layers = prunable_layers(model, "prune_ffn")
    if entry(model).gated_ffn:
        kept = _prune_gated_ffn(model, layers, config, batches)
        width = max(kept)
    else:
        roots = [part(model, layer, "ffn_in") for layer in layers]
        graph, scores = group_scores(model, config, batches, "prune_ffn", roots)
        removed = select_units(scores, config.ratio, config.scope)
        for root, dead in zip(roots, removed):
            prune_out_channels(graph, root, dead)
        kept = [part(model, layer, "ffn_in").out_features for layer in layers]
        width = max(kept)
        for layer in layers:
            pad_ffn(model, layer, width)
    setattr(model.config, entry(model).ffn_key, width)
    record(model, {"pass": "prune_ffn", "neurons_per_layer": kept, "stored_width": width})
    return model


def fused_scores(model: nn.Module, layers: list[nn.Module], config, batches, what: str, score) -> list[Tensor]:
    """Per-unit scores of each layer from alembert.fused_units, after the Taylor gradients when asked for."""
    if IMPORTANCE[config.importance][1]:
        _accumulate_taylor_gradients(model, batches, config.taylor_batches, what)
    scores = [score(model, layer, config.importance) for layer in layers]
    model.zero_grad(set_to_none=True)
    return scores


def _prune_gated_ffn(model: nn.Module, layers: list[nn.Module], config, batches) -> list[int]:
    """Remove the selected neurons of each gated FFN, padding uneven layers to the widest; the kept counts."""
    removed = select_units(fused_scores(model, layers, config, batches, "prune_ffn", fused_units.neuron_scores),
                           config.ratio, config.scope)
    keeps = [[j for j in range(part(model, layer, "ffn_in").out_features // 2) if j not in set(dead)]
             for layer, dead in zip(layers, removed)]
    width = max(len(keep) for keep in keeps)
    for layer, keep in zip(layers, keeps):
        fused_units.keep_neurons(model, layer, keep, width)
    return [len(keep) for keep in keeps]


@torch.no_grad()
def pad_ffn(model: nn.Module, layer: nn.Module, width: int) -> None:
    """Grow a layer's FFN to `width` neurons with zero neurons, which contribute exactly nothing."""
    inner, outer = part(model, layer, "ffn_in"), part(model, layer, "ffn_out")
    extra = width - inner.out_features
    if extra == 0:
        return
    grown_in = nn.Linear(inner.in_features, width)
    grown_in.weight.copy_(torch.cat([inner.weight, inner.weight.new_zeros(extra, inner.in_features)]))
    grown_in.bias.copy_(torch.cat([inner.bias, inner.bias.new_zeros(extra)]))
    grown_out = nn.Linear(width, outer.out_features)
    grown_out.weight.copy_(torch.cat([outer.weight, outer.weight.new_zeros(outer.out_features, extra)], dim=1))
    grown_out.bias.copy_(outer.bias)
    replace_part(model, layer, "ffn_in", grown_in)
    replace_part(model, layer, "ffn_out", grown_out)
