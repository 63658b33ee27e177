"""A pruned vocabulary: which old token ids a model keeps (in new-id order), and the matching tokenizer and inputs.

compress's prune_vocab pass cuts the embedding rows and records the kept ids in the model's compression history
(config.json). Everything else is derived from that record, so the data flows one way: `tokenizer_for` rewrites
the tokenizer's `tokenizer.json` (WordPiece vocab or Unigram pieces, special-token ids, padding id) so that the
saved model and tokenizer load in plain transformers and tokenizers; `remap_batch` moves already-encoded batches
(the pipeline's train and dev data) into the new ids, with pruned tokens as UNK.

Why text made only of kept tokens encodes the same: WordPiece matches greedily the longest piece in the vocabulary,
and the piece it matched before is still there; Unigram picks the best-scoring segmentation, and the one it picked
before is still possible and nothing new is. Byte-level BPE is refused: dropping a token breaks the merges that
build longer kept tokens.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from alembert.errors import fail

PASS_NAME = "prune_vocab"
SUPPORTED_MODELS = ("WordPiece", "WordLevel", "Unigram")  # WordLevel: student.tokenizer=words (alembert.word_vocab)


def pruning_entry(model) -> dict | None:
    """The model's last prune_vocab history entry (kept_ids, vocab_before, unk_id); None if it has none."""
    return last_pruning(getattr(model.config, "alembert_compression", None))


def last_pruning(history: list[dict] | None) -> dict | None:
    """The last prune_vocab entry of a compression history (config.json's alembert_compression); None if none."""
    return next((entry for entry in reversed(history or []) if entry.get("pass") == PASS_NAME), None)


def kept_ids(model) -> list[int] | None:
    """The old ids the model's embedding rows hold, in new-id order, after its last prune_vocab; None if none."""
    entry = pruning_entry(model)
    return None if entry is None else list(entry["kept_ids"])


def input_table(model) -> Tensor:
    """Old id -> new id for the model's pruned vocabulary, pruned ids to UNK."""
    return history_table(model.config.alembert_compression)


def history_table(history: list[dict] | None) -> Tensor | None:
    """Old id -> new id after a compression history's last prune_vocab; None when the vocabulary was never pruned."""
    entry = last_pruning(history)
    if entry is None:
        return None
    return old_to_new(entry["kept_ids"], entry["vocab_before"], entry["unk_id"] if entry["unk_id"] is not None else 0)


def old_to_new(kept: list[int], vocabulary_before: int, unk_new: int) -> Tensor:
    """A lookup table from every old id to its new one; a pruned id maps to UNK."""
    table = torch.full((vocabulary_before,), unk_new, dtype=torch.long)
    table[torch.tensor(kept, dtype=torch.long)] = torch.arange(len(kept))
    return table


def remap_batch(batch: dict, table: Tensor) -> dict:
    """`batch` with its input ids in the new vocabulary (teacher-side keys of a paired batch stay as they are)."""
    return {**batch, "input_ids": table[batch["input_ids"]]} if "input_ids" in batch else batch


def moved_loader(loader: DataLoader, table: Tensor) -> DataLoader:
    """The same loader (rows, order, batch size), its batches in the new token ids."""
    collate = loader.collate_fn
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                      collate_fn=lambda rows: remap_batch(collate(rows), table))


def loader_for(model, loader: DataLoader) -> DataLoader:
    """`loader` (in the original tokenizer's ids) as `model` reads it: moved into its pruned vocabulary if it has one."""
    table = history_table(getattr(model.config, "alembert_compression", None))
    return loader if table is None else moved_loader(loader, table)


def check_tokenizer(tokenizer) -> dict:
    """The tokenizer's tokenizer.json as a dict, refused in one line when its model cannot be pruned."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise fail("prune_vocab needs a fast (tokenizers-backed) tokenizer", "save the model with a tokenizer.json")
    state = json.loads(backend.to_str())
    kind = state["model"]["type"]
    if kind not in SUPPORTED_MODELS:
        raise fail(f"prune_vocab does not support {kind} tokenizers: dropping a token would break the merges that build "
                   "longer ones", f"it supports {', '.join(SUPPORTED_MODELS)} (BERT, ELECTRA, XLM-R, DeBERTa-v3 ...)")
    return state


def tokenizer_for(model, tokenizer):
    """`tokenizer`, rewritten for the model's pruned vocabulary when the model has one and the tokenizer is still the
    original; else `tokenizer` itself."""
    kept = kept_ids(model)
    if kept is None or len(tokenizer) == len(kept):
        return tokenizer
    state = check_tokenizer(tokenizer)
    new_of = {old: new for new, old in enumerate(kept)}
    _remap_model(state["model"], kept, new_of)
    _remap_specials(state, new_of)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for stale in ("vocab.txt", "sentencepiece.bpe.model", "spm.model", "vocab.json", "merges.txt"):
            (Path(tmp) / stale).unlink(missing_ok=True)  # the slow tokenizer's files would describe the old vocabulary
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False))
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tmp)


def _remap_model(model: dict, kept: list[int], new_of: dict[int, int]) -> None:
    if model["type"] in ("WordPiece", "WordLevel"):  # a {token: id} vocabulary
        by_id = {index: token for token, index in model["vocab"].items()}
        model["vocab"] = {by_id[old]: new for new, old in enumerate(kept)}
    else:  # Unigram: a list of [piece, score] in id order
        model["vocab"] = [model["vocab"][old] for old in kept]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_of[model["unk_id"]]


def _remap_specials(state: dict, new_of: dict[int, int]) -> None:
    """Added tokens, the post-processor's special-token ids and the padding id, in the new ids."""
    state["added_tokens"] = [{**token, "id": new_of[token["id"]]} for token in state.get("added_tokens", [])
                             if token["id"] in new_of]
    if state.get("padding") and state["padding"].get("pad_id") in new_of:
        state["padding"]["pad_id"] = new_of[state["padding"]["pad_id"]]
    _remap_processor(state.get("post_processor"), new_of)


def _remap_processor(processor: dict | None, new_of: dict[int, int]) -> None:
    if not processor:
        return
    for child in processor.get("processors", []):  # a Sequence of processors
        _remap_processor(child, new_of)
    for key in ("sep", "cls"):  # BertProcessing, RobertaProcessing: [token, id]
        if key in processor:
            processor[key] = [processor[key][0], new_of[processor[key][1]]]
    for special in (processor.get("special_tokens") or {}).values():  # TemplateProcessing
        special["ids"] = [new_of[i] for i in special["ids"]]
