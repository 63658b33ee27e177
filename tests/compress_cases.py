"""Every registered compression pass with a small setting, shared by the token and span head tests
(test_compress_ner.py, test_compress_qa.py): each entry says how the pass may change the head."""

from __future__ import annotations

import torch

from compress.passes.factorize import FactorizeEmbeddingsConfig
from compress.passes.hidden import PruneHiddenConfig
from compress.passes.layers import DropLayersConfig
from compress.passes.prune import PruneFfnConfig, PruneHeadsConfig
from compress.passes.quantize import CastConfig, QuantizeDynamicConfig
from compress.passes.share import ShareLayersConfig
from compress.passes.sparsity import SparsityConfig
from compress.passes.vocab import PruneVocabConfig
from alembert.vocab import input_table, kept_ids, remap_batch

CASES = {  # pass -> (its config, what happens to the head: same | columns (a subset of them) | int8 | fp16)
    "prune_heads": (PruneHeadsConfig(ratio=0.5), "same"),
    "prune_ffn": (PruneFfnConfig(ratio=0.5, scope="global"), "same"),
    "prune_hidden": (PruneHiddenConfig(ratio=0.25), "columns"),
    "drop_layers": (DropLayersConfig(count=2), "same"),
    "sparsity": (SparsityConfig(sparsity=0.5), "same"),
    "share_layers": (ShareLayersConfig(groups=2), "same"),
    "factorize_embeddings": (FactorizeEmbeddingsConfig(embedding_size=16), "same"),
    "quantize_dynamic": (QuantizeDynamicConfig(), "int8"),
    "cast": (CastConfig(dtype="fp16"), "fp16"),
    "prune_vocab": (PruneVocabConfig(), "same"),  # reads the batch's tokens: apply it with batches=[batch]
}


def in_model_ids(model, batch: dict) -> dict:
    """`batch` in the token ids the model reads (new ones after prune_vocab)."""
    return batch if kept_ids(model) is None else remap_batch(batch, input_table(model))


def real_tokens(values: torch.Tensor, batch) -> torch.Tensor:
    return values[batch["attention_mask"].bool()]


def linear_weight(linear) -> torch.Tensor:
    weight = linear.weight
    return (weight() if callable(weight) else weight).detach()  # an int8 Linear hands its weight out by a call


def check_head(weight: torch.Tensor, before: torch.Tensor, head: str) -> None:
    """The head after a pass, as its CASES entry says it may change."""
    if head == "same":
        assert torch.equal(weight, before)
    elif head == "columns":  # prune_hidden removes input channels only: every kept column is an original one
        assert weight.shape[1] < before.shape[1]
        assert all(any(torch.equal(column, old) for old in before.T) for column in weight.T)
    else:
        assert weight.shape == before.shape
