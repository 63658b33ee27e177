"""Vocabulary pruning (as TextPruner does): keep the word-embedding rows of the tokens the task's training data uses,
plus every special token and UNK, and drop the rest. In a 3-layer SST-2 student the 30,522 x 384 word table is
62.5 of 69.6 MB, and most of those tokens never occur in the task.

The kept ids are recorded in the compression history; alembert.vocab rewrites the tokenizer to match when the model
is saved, and compress's pipeline moves its data into the new ids for the passes after this one. Put it before
factorize_embeddings and quantize_dynamic, which then work on the smaller table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alembert.config import bounded
from alembert.errors import fail
from alembert.families import record, require_float32
from alembert.vocab import PASS_NAME, check_tokenizer, kept_ids
from compress.registry import register_pass

SPECIAL_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")


@dataclass(frozen=True)
class PruneVocabConfig:
    """Keep the tokens that occur at least `min_count` times in the training data and in the UTF-8 text files
    `texts` (one text per line: text the model will see in use), plus every special token and UNK."""

    min_count: int = bounded(1, low=1)
    texts: tuple[str, ...] = ()


def text_counts(paths: tuple[str, ...], tokenizer, vocabulary: int) -> torch.Tensor:
    """How often each id occurs in the lines of `paths`, each file read whole before anything is pruned."""
    counts = torch.zeros(vocabulary, dtype=torch.long)
    for name in paths:
        path = Path(name).expanduser()
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            raise fail(f"prune_vocab.texts: {path} does not exist", "give existing text files, one text per line") from None
        except (UnicodeDecodeError, IsADirectoryError, PermissionError) as err:
            raise fail(f"prune_vocab.texts: {path} cannot be read as UTF-8 text ({type(err).__name__})",
                       "give plain UTF-8 text files, one text per line") from None
        for ids in tokenizer(lines, add_special_tokens=False)["input_ids"] if lines else []:
            counts += torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=vocabulary)[:vocabulary]
    return counts


def token_counts(batches, vocabulary: int) -> torch.Tensor:
    """How often each id occurs at a real (unpadded) position of the batches."""
    counts = torch.zeros(vocabulary, dtype=torch.long)
    for batch in batches:
        ids = batch["input_ids"][batch["attention_mask"].bool()]
        counts += torch.bincount(ids.flatten(), minlength=vocabulary)[:vocabulary]
    return counts


@register_pass(PASS_NAME, PruneVocabConfig, needs_tokenizer=True, remaps_inputs=True)
def prune_vocab(model: nn.Module, config: PruneVocabConfig, *, batches=None, tokenizer=None) -> nn.Module:
    require_float32(model, PASS_NAME)
    if batches is None:
        raise fail("prune_vocab needs task data: it keeps the tokens the training split uses", "give data=... (the train split is read)")
    check_tokenizer(tokenizer)
    if kept_ids(model) is not None:
        raise fail("prune_vocab runs once per model: this one's vocabulary is already pruned", "list prune_vocab once")
    table = model.get_input_embeddings()
    vocabulary = table.num_embeddings
    counts = token_counts(batches, vocabulary) + text_counts(config.texts, tokenizer, vocabulary)
    special = {i for i in tokenizer.all_special_ids if i < vocabulary}
    kept = sorted(special | set(torch.nonzero(counts >= config.min_count).flatten().tolist()))
    new_of = {old: new for new, old in enumerate(kept)}
    pruned = nn.Embedding(len(kept), table.embedding_dim, padding_idx=new_of.get(table.padding_idx))
    with torch.no_grad():
        pruned.weight.copy_(table.weight[torch.tensor(kept, dtype=torch.long)])
    model.set_input_embeddings(pruned.to(table.weight.dtype))
    model.config.vocab_size = len(kept)
    for key in SPECIAL_ID_KEYS:
        if getattr(model.config, key, None) is not None and getattr(model.config, key) in new_of:
            setattr(model.config, key, new_of[getattr(model.config, key)])
    record(model, {"pass": PASS_NAME, "kept_ids": kept, "vocab_before": vocabulary,
                   "unk_id": new_of.get(tokenizer.unk_token_id), "min_count": config.min_count})
    return model
