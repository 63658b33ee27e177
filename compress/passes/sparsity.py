"""Unstructured magnitude pruning of the encoder's linear weights, made permanent."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from alembert.families import check_ratio, record, require_float32
from compress.registry import register_pass
from alembert.errors import fail



def _global(targets: list[tuple[nn.Module, str]], amount: float) -> None:
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)


def _per_layer(targets: list[tuple[nn.Module, str]], amount: float) -> None:
    for module, name in targets:
        prune.l1_unstructured(module, name, amount=amount)


SCOPES = {"global": _global, "per_layer": _per_layer}


@dataclass(frozen=True)
class SparsityConfig:
    """Zero the smallest-magnitude `sparsity` of the encoder's linear weights.

    scope=global ranks all those weights together; per_layer removes `sparsity` from each linear.
    The task head (classifier, qa_outputs) is left dense: it is tiny and every weight of it matters.
    """

    sparsity: float = 0.5
    scope: str = "global"

    def __post_init__(self):
        check_ratio(self.sparsity, "sparsity.sparsity")
        if self.scope not in SCOPES:
            raise fail(f"sparsity.scope={self.scope} is unknown", f"use one of {', '.join(SCOPES)}")


def prunable_linears(model: nn.Module) -> list[nn.Linear]:
    head = {id(m) for name, m in model.named_modules() if name.startswith(("classifier", "pre_classifier", "qa_outputs"))}
    return [m for m in model.base_model.modules() if isinstance(m, nn.Linear) and id(m) not in head]


def linear_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over the encoder's linear layers (0 for a quantized model)."""
    weights = [m.weight for m in prunable_linears(model) if isinstance(getattr(m, "weight", None), torch.Tensor)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


@register_pass("sparsity", SparsityConfig)
def magnitude_sparsity(model: nn.Module, config: SparsityConfig, *, batches=None) -> nn.Module:
    require_float32(model, "sparsity")
    targets = [(linear, "weight") for linear in prunable_linears(model)]
    SCOPES[config.scope](targets, config.sparsity)
    for module, name in targets:
        prune.remove(module, name)  # fold the mask into the weight: a plain tensor that save_pretrained writes
    achieved = linear_sparsity(model)
    print(f"sparsity: target {config.sparsity:.3f}, achieved {achieved:.4f} over {len(targets)} linear layers")
    record(model, {"pass": "sparsity", "target": config.sparsity, "achieved": round(achieved, 6), "scope": config.scope})
    return model
