"""Token classification (NER, POS): one distribution over the tags per word.

Labels sit on each word's first sub-token (all of its pieces with data.label_all_subtokens=true); every other
position carries -100 and is skipped by the losses, the metric and the agreement alike. Logit-level losses are
the classification ones applied to the labelled token rows, so soft targets average over labelled tokens, never
over padding. A sentence longer than data.max_length sub-tokens is split between words into several rows, so
no gold tag is lost to truncation (a note says how many were split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from alembert import demo_ner
from alembert.errors import fail
from alembert.tables import read_table
from alembert.tagging import IGNORED, align_labels, continuation_ids, entity_types, read_conll, scheme_of, to_iob2, word_chunks
from alembert.tasks import TASKS
from alembert.tasks.base import TokenOutputs
from alembert.tasks.classification import SequenceClassification


@dataclass(frozen=True)
class TokenClassification(TokenOutputs, SequenceClassification):
    @property
    def model_class(self):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def head_kwargs(self, label_names: tuple[str, ...] | None) -> dict:
        """transformers leaves problem_type unset for token heads; alembert records its task there (task_of reads it)."""
        return {**super().head_kwargs(label_names), "problem_type": self.problem_type}

    def onnx_outputs(self) -> dict[str, dict[int, str]]:
        return {"logits": {0: "batch", 1: "sequence"}}

    def augmentable(self) -> bool:
        return False

    def one_output_per_text(self) -> bool:
        return False

    def int8_metric_drop(self) -> float:
        """Entity F1 may lose at most 1 point to int8: one wrong tag costs a whole entity, so it falls faster."""
        return 0.01

    def int8_logit_bound(self) -> float:
        """The maximum runs over every real token, not one row per sentence: a few outlier tokens reach 1.4-1.9 on
        CoNLL-2003 students whose entity F1 int8 keeps (benchmarks/results/conll/)."""
        return 3.0

    def read_file(self, path: Path, config) -> list[tuple]:
        """JSONL rows {"tokens": [...], "tags": [...]} (data.text_column / data.label_column), or a CoNLL file."""
        if path.suffix.lower() in (".jsonl", ".json"):
            return read_table(path, config)
        return read_conll(path, config.encoding)

    def demo_rows(self, config) -> dict[str, list[tuple]]:
        return demo_ner.generate(config)

    def parse_row(self, text, pair, label, index: dict[str, int], where: str) -> tuple:
        words, tags = _sequence(text, where, "tokens"), _sequence(label, where, "tags")
        if len(words) != len(tags):
            raise fail(f"{where} has {len(words)} tokens but {len(tags)} tags", "give exactly one tag per token")
        return words, None, self.parse_label(tags, index, where)

    def label_names(self, raw_labels) -> tuple[str, ...]:
        """The tags of the training set, "O" first, then by entity type and prefix."""
        tags = {tag for sentence in raw_labels for tag in to_iob2(_sequence(sentence, "the training set", "tags"))}
        return tuple(sorted(tags, key=lambda tag: (tag != "O", tag[2:], tag[:2])))

    def parse_label(self, label, index: dict[str, int], where: str) -> tuple[int, ...]:
        tags = to_iob2(str(tag).strip() for tag in label)
        unknown = sorted({tag for tag in tags if tag not in index})
        if unknown:
            raise fail(f"{where}: tag {', '.join(unknown)} does not occur in the training set (its tags: {', '.join(index)})",
                       "fix the tag, or add sentences with it to the training set")
        return tuple(index[tag] for tag in tags)

    def encode(self, examples, tokenizer, config, label_names: tuple[str, ...] | None = None) -> list[dict]:
        """Word-aligned rows; a sentence too long for max_length becomes several rows split between words.

        Two batched tokenizer calls for the whole split (word piece counts, then the chunks), not two per sentence."""
        if not getattr(tokenizer, "is_fast", False):
            raise fail("token classification needs a fast tokenizer (for word ids)", "use a model with a tokenizer.json")
        room = config.max_length - tokenizer.num_special_tokens_to_add(pair=False)
        words = [word for example in examples for word in example.text]
        counts = iter(len(ids) for ids in tokenizer(words, add_special_tokens=False)["input_ids"]) if words else iter(())
        chunks = []  # (words, tags) of each row
        for example in examples:
            spans = word_chunks([max(next(counts), 1) for _ in example.text], room)
            chunks += [(example.text[start:end], example.label[start:end]) for start, end in spans]
        if len(chunks) > len(examples):
            tqdm.write(f"{len(chunks) - len(examples)} extra row(s): sentences longer than data.max_length="
                       f"{config.max_length} sub-tokens were split between words")
        return self._encode_chunks(chunks, tokenizer, config, continuation_ids(tuple(label_names)) if label_names else {})

    def _encode_chunks(self, chunks, tokenizer, config, continuation: dict[int, int]) -> list[dict]:
        encoded = tokenizer([list(words) for words, _ in chunks], is_split_into_words=True, truncation=True,
                            max_length=config.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        rows = []
        for index, (_, tags) in enumerate(chunks):
            labels = align_labels(encoded.word_ids(index), list(tags), all_pieces=config.label_all_subtokens,
                                  continuation=continuation)
            rows.append({**{k: encoded[k][index] for k in keys}, "labels": labels, "index": index})
        return rows

    def collate_labels(self, labels: list, width: int) -> Tensor:
        return torch.tensor([list(row) + [IGNORED] * (width - len(row)) for row in labels], dtype=self.label_dtype)

    def positions(self, labels: Tensor | None, attention_mask: Tensor) -> Tensor:
        """Labelled tokens when labels are known, else every real token."""
        return labels != IGNORED if labels is not None else attention_mask.bool()

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if not (labels != IGNORED).any():
            return logits.sum() * 0.0  # no labelled token in the batch: no signal, but no NaN
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORED)

    def metrics(self, logits: Tensor, labels: Tensor, label_names: tuple[str, ...] | None = None,
                rows=None) -> dict[str, float]:
        """seqeval's entity-level micro precision/recall/F1 in strict mode, per-type F1, and token accuracy."""
        from seqeval.metrics import classification_report
        from seqeval.scheme import IOB2, IOBES

        names = tuple(label_names) if label_names else tuple(str(i) for i in range(logits.shape[-1]))
        gold, predicted = _tag_sequences(logits.argmax(-1), labels, names)
        scheme = IOBES if scheme_of(names) == "IOBES" else IOB2
        report = classification_report(gold, predicted, mode="strict", scheme=scheme, output_dict=True, zero_division=0)
        micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
        known = labels != IGNORED
        accuracy = (logits.argmax(-1)[known] == labels[known]).float().mean() if known.any() else torch.tensor(0.0)
        result = {"f1": float(micro["f1-score"]), "precision": float(micro["precision"]), "recall": float(micro["recall"]),
                  "token_accuracy": float(accuracy)}
        result.update({f"f1_{kind}": float(report[kind]["f1-score"]) for kind in entity_types(names) if kind in report})
        return result

    def example_counts(self, logits: Tensor, labels: Tensor, label_names: tuple[str, ...] | None = None,
                       rows=None) -> np.ndarray:
        """[true positive, predicted, gold] entities per row, matched as `metrics` matches them (strict mode): entity F1
        is 2·Σtp / (Σpredicted + Σgold), not a mean of per-sentence scores."""
        from seqeval.scheme import IOB2, IOBES, Entities

        names = tuple(label_names) if label_names else tuple(str(i) for i in range(logits.shape[-1]))
        gold, predicted = _tag_sequences(logits.argmax(-1), labels, names)
        scheme = IOBES if scheme_of(names) == "IOBES" else IOB2
        pairs = zip(Entities(gold, scheme).entities, Entities(predicted, scheme).entities)
        counts = [(len(set(true) & set(guess)), len(guess), len(true)) for true, guess in pairs]
        return np.array(counts, dtype=np.int64).reshape(-1, 3)

    def score_counts(self, summed: np.ndarray) -> np.ndarray:
        """Micro entity F1 from [tp, predicted, gold] sums. With no gold and no predicted entity the score is 1 (nothing
        to find, nothing claimed): a sentence scored alone then tells a spurious entity from none; seqeval says 0 there,
        which only differs for a whole split without a single entity."""
        tp, predicted, gold = np.moveaxis(np.asarray(summed, dtype=np.float64), -1, 0)
        total = predicted + gold
        return np.where(total > 0, 2 * tp / np.maximum(total, 1.0), 1.0)

    def agreement(self, student: Tensor, teacher: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """Per-token agreement and KL(teacher || student) at T=1, over labelled tokens."""
        chosen = labels != IGNORED if labels is not None else torch.ones(student.shape[:2], dtype=torch.bool)
        return super().agreement(student[chosen], teacher[chosen])


def _sequence(value, where: str, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise fail(f"{where}: the {what} must be a list (got {type(value).__name__})",
                   'give each sentence as {"tokens": [...], "tags": [...]}, or use a CoNLL file')
    items = tuple(str(item) for item in value)
    if not items:
        raise fail(f"{where} has no {what}", "drop empty sentences from the file")
    return items


def _tag_sequences(predicted: Tensor, labels: Tensor, names: tuple[str, ...]) -> tuple[list[list[str]], list[list[str]]]:
    gold, guess = [], []
    for row_pred, row_gold in zip(predicted.tolist(), labels.tolist()):
        kept = [(g, p) for g, p in zip(row_gold, row_pred) if g != IGNORED]
        gold.append([names[g] for g, _ in kept])
        guess.append([names[p] for _, p in kept])
    return gold, guess


TASKS.add("token_classification", TokenClassification(
    name="token_classification", problem_type="token_classification", decoder="entities", primary_metric="f1",
    summary_columns=("f1", "precision", "recall", "agreement", "kl_to_teacher"), label_dtype=torch.long))
