"""Embedding factorization: a V x E word table and an E x H projection, initialised by truncated SVD.

Other families are first converted to ALBERT (one group per layer, exact), whose config
natively holds `embedding_size` and the `embedding_hidden_mapping_in` projection, so the result
reloads with stock Auto classes.

Why the construction is exact up to the SVD truncation: the embedding LayerNorm subtracts each
row's mean, so centring every table row first changes nothing. The centred rows of the word,
position and token-type tables are stacked and given one truncated SVD basis B (rank E - 1). In E
dimensions the codes are laid out orthogonal to the all-ones vector, so ALBERT's E-wide LayerNorm
(weight 1, bias 0) only rescales them by their norm, just as the original LayerNorm did; the old
LayerNorm weight and bias and the old projection fold into the new E x H projection. One of the E
dimensions is spent on that mean-free layout, so E equal to the current width is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from compress.albert import supported, to_albert
from alembert.families import family, record, require_family, require_float32
from compress.registry import register_pass
from alembert.errors import fail


@dataclass(frozen=True)
class FactorizeEmbeddingsConfig:
    """Factorize the embeddings to width `embedding_size` (E) through a truncated SVD."""

    embedding_size: int = 128

    def __post_init__(self):
        if self.embedding_size < 2:
            raise fail(f"factorize_embeddings.embedding_size={self.embedding_size} must be at least 2",
                       "choose E such as 128 (one dimension is spent on the LayerNorm centring)")


def mean_free_basis(width: int) -> Tensor:
    """`width` x (width - 1) orthonormal columns, all orthogonal to the all-ones vector."""
    seed = torch.eye(width, dtype=torch.float64)
    seed[:, 0] = 1.0
    q, _ = torch.linalg.qr(seed)
    return q[:, 1:]


@torch.no_grad()
def factorize(model: nn.Module, embedding_size: int) -> dict[str, float]:
    """Rewrite an ALBERT model's embeddings at width `embedding_size` in place; return the SVD errors."""
    embeddings, mapping = model.albert.embeddings, model.albert.encoder.embedding_hidden_mapping_in
    width = model.config.embedding_size
    if not 2 <= embedding_size <= width:
        raise fail(f"factorize_embeddings.embedding_size={embedding_size} must be between 2 and the current width {width}",
                   f"choose an embedding size below {width}, e.g. {max(2, width // 4)}")
    tables = [embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings]
    centred = [t.weight.double() - t.weight.double().mean(dim=1, keepdim=True) for t in tables]
    stacked = torch.cat(centred)
    _, _, basis = torch.linalg.svd(stacked, full_matrices=False)
    basis = basis[: embedding_size - 1]  # (E-1) x D, orthonormal rows
    layout = mean_free_basis(embedding_size)  # E x (E-1)
    codes = [c @ basis.T @ layout.T for c in centred]
    word_error = float(torch.linalg.norm(centred[0] - centred[0] @ basis.T @ basis) / torch.linalg.norm(centred[0]))
    total_error = float(torch.linalg.norm(stacked - stacked @ basis.T @ basis) / torch.linalg.norm(stacked))
    norm = embeddings.LayerNorm
    scale = math.sqrt(width / embedding_size)
    projection = mapping.weight.double() @ torch.diag(norm.weight.double()) @ basis.T @ layout.T * scale
    bias = mapping.weight.double() @ norm.bias.double() + mapping.bias.double()
    for table, code in zip(tables, codes):
        table.weight = nn.Parameter(code.float())
        table.embedding_dim = embedding_size
    embeddings.LayerNorm = nn.LayerNorm(embedding_size, eps=model.config.layer_norm_eps)  # the eps a reload uses
    new_mapping = nn.Linear(embedding_size, mapping.out_features)
    new_mapping.weight.copy_(projection.float())
    new_mapping.bias.copy_(bias.float())
    model.albert.encoder.embedding_hidden_mapping_in = new_mapping
    model.config.embedding_size = embedding_size
    return {"word_reconstruction_error": word_error, "embedding_reconstruction_error": total_error}


@register_pass("factorize_embeddings", FactorizeEmbeddingsConfig)
def factorize_embeddings(model: nn.Module, config: FactorizeEmbeddingsConfig, *, batches=None) -> nn.Module:
    require_float32(model, "factorize_embeddings")
    require_family(model, supported(), "factorize_embeddings")
    head = {}
    if family(model) != "albert":
        model, head = to_albert(model, groups=model.config.num_hidden_layers, batches=batches)
    errors = factorize(model, config.embedding_size)
    print(f"factorize_embeddings: E={config.embedding_size}, relative reconstruction error "
          f"{errors['word_reconstruction_error']:.4f} (word table), {errors['embedding_reconstruction_error']:.4f} (all tables)")
    record(model, {"pass": "factorize_embeddings", "embedding_size": config.embedding_size,
                   **{k: round(v, 6) for k, v in errors.items()}, **head})
    return model
