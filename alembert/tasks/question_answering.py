"""Extractive question answering (SQuAD v1.1): a start and an end distribution over each window's tokens.

A context longer than data.max_length is cut into windows that share data.doc_stride tokens, each with the whole
question (384 and 128, as in the transformers examples); the teacher cache and the student see the same windows,
keyed by the window's row. Answer positions come from the tokenizer's offset mapping; a window that does not hold
the first gold answer points both at [CLS].

Collated labels are [rows, 1 + tokens]: the window's row index, then per token its role: -100 off the context,
0 on a context token (or [CLS], the "not in this window" slot), 1 answer start, 2 answer end, 3 both. So the hard
loss finds its targets there and the soft losses their mask: Hinton KD compares the start and the end
distributions over the context (and [CLS]) only, at temperature T with T² scaling.

Metrics post-process as the SQuAD evaluation expects: the best span over all windows of a question (20 best starts
and ends per window, at most data.max_answer_length tokens: alembert.decoding.best_span, which the torch-free
predictor runs too), then exact match and F1 with the official answer normalisation (torchmetrics' SQuAD metric).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from alembert.decoding import best_span
from alembert.errors import fail
from alembert.squad import parse_answers, read_qa_file
from alembert.tagging import IGNORED
from alembert.tasks import TASKS
from alembert.tasks.base import TokenOutputs
from alembert.tasks.classification import SequenceClassification

OFF_CONTEXT = -1e4  # a logit no softmax gives mass to, and finite: KL of two masked rows stays 0, not NaN
START, END = 1, 2  # role bits


@dataclass(frozen=True)
class QuestionAnswering(TokenOutputs, SequenceClassification):
    @property
    def model_class(self):
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    def head_kwargs(self, label_names: tuple[str, ...] | None) -> dict:
        return {"num_labels": 2, "problem_type": self.problem_type}

    def output_logits(self, outputs) -> Tensor:
        return torch.stack([outputs.start_logits, outputs.end_logits], dim=-1)

    def output_tensors(self, outputs) -> tuple[Tensor, ...]:
        return outputs.start_logits, outputs.end_logits

    def onnx_outputs(self) -> dict[str, dict[int, str]]:
        return {"start_logits": {0: "batch", 1: "sequence"}, "end_logits": {0: "batch", 1: "sequence"}}

    def manifest_fields(self, data_config) -> dict:
        return {"doc_stride": data_config.doc_stride, "max_answer_length": data_config.max_answer_length}

    def augmentable(self) -> bool:
        return False

    def one_output_per_text(self) -> bool:
        return False

    def int8_metric_drop(self) -> float:
        return 0.015  # SQuAD F1 may lose 1.5 points to int8

    def int8_logit_bound(self) -> float:
        return 4.0  # over every real token of every window; span logits run to ±10

    # --- data ---

    def read_file(self, path: Path, config) -> list[tuple]:
        return read_qa_file(path, config)

    def demo_rows(self, config) -> dict[str, list[tuple]]:
        from alembert import demo_qa

        return demo_qa.generate(config)

    def label_names(self, raw_labels) -> None:
        return None

    def parse_row(self, text, pair, label, index: dict[str, int], where: str) -> tuple:
        question, context = _text(text, where, "question"), _text(pair, where, "context")
        return question, context, parse_answers(label, context, where)

    def encode(self, examples, tokenizer, config, label_names=None) -> list[dict]:
        """One row per window; each keeps its example number, its context offsets and the example's gold answers."""
        if not getattr(tokenizer, "is_fast", False):
            raise fail("question answering needs a fast tokenizer (for offsets)", "use a model with a tokenizer.json")
        if not examples:
            return []
        encoded = _windows(examples, tokenizer, config)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        rows = []
        for index, number in enumerate(encoded["overflow_to_sample_mapping"]):
            example = examples[number]
            offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][index], encoded.sequence_ids(index))]
            roles = _roles(offsets, example.label[0], _cls_index(encoded["input_ids"][index], tokenizer))
            rows.append({**{k: encoded[k][index] for k in keys}, "labels": (index, *roles), "index": index,
                         "example": number, "context_offsets": offsets, "context": example.text_pair,
                         "answers": tuple(text for text, _ in example.label), "max_answer_length": config.max_answer_length})
        return rows

    def collate_labels(self, labels: list, width: int) -> Tensor:
        return torch.tensor([list(row) + [IGNORED] * (width + 1 - len(row)) for row in labels], dtype=self.label_dtype)

    # --- losses ---

    def positions(self, labels: Tensor | None, attention_mask: Tensor) -> Tensor:
        """The context tokens and [CLS] when labels are known, else every real token."""
        return _roles_of(labels) != IGNORED if labels is not None else attention_mask.bool()

    def soft_rows(self, logits: Tensor, labels: Tensor | None, attention_mask: Tensor) -> Tensor:
        """[2 x rows, tokens]: each window's start distribution, then its end one, off-context tokens masked out."""
        allowed = self.positions(labels, attention_mask)[:, : logits.shape[1]]
        masked = logits.masked_fill(~allowed.unsqueeze(-1), OFF_CONTEXT)
        return masked.transpose(1, 2).reshape(-1, logits.shape[1])

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean of the cross-entropies of the start and the end position."""
        roles = _roles_of(labels)[:, : logits.shape[1]]
        starts, ends = _targets(roles, START), _targets(roles, END)
        return (F.cross_entropy(logits[..., 0], starts) + F.cross_entropy(logits[..., 1], ends)) / 2

    def mix(self, logits: list[Tensor], weights: Tensor, temperature: float) -> Tensor:
        """Several teachers' start and end distributions mixed per window (the sequence axis is the class axis)."""
        mixed = super().mix([z.transpose(1, 2) for z in logits], weights, temperature)
        return mixed.transpose(1, 2)

    # --- metrics ---

    def metrics(self, logits: Tensor, labels: Tensor, label_names=None, rows=None) -> dict[str, float]:
        """SQuAD exact match and F1 (fractions) of the best span per question, and start/end token accuracy."""
        scores = self._question_scores(logits, labels, rows)
        roles = _roles_of(labels)[:, : logits.shape[1]]
        hits = (logits[..., 0].argmax(-1) == _targets(roles, START)) & (logits[..., 1].argmax(-1) == _targets(roles, END))
        return {"f1": float(scores[:, 1].mean()), "exact_match": float(scores[:, 0].mean()),
                "window_accuracy": float(hits.float().mean())}

    def example_counts(self, logits: Tensor, labels: Tensor, label_names=None, rows=None) -> np.ndarray:
        """[exact match, F1, 1] per question: SQuAD F1 is the mean of the questions' own F1."""
        scores = self._question_scores(logits, labels, rows)
        return np.concatenate([scores, np.ones((len(scores), 1))], axis=1)

    def score_counts(self, summed: np.ndarray) -> np.ndarray:
        summed = np.asarray(summed, dtype=np.float64)
        return summed[..., 1] / np.maximum(summed[..., 2], 1.0)

    def agreement(self, student: Tensor, teacher: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """Agreement of the start and end tokens, and KL(teacher || student) at T=1, over the context."""
        mask = torch.ones(student.shape[:2], dtype=torch.long)
        return super().agreement(self.soft_rows(student, labels, mask), self.soft_rows(teacher, labels, mask))

    def _question_scores(self, logits: Tensor, labels: Tensor, rows) -> np.ndarray:
        """[questions, 2]: exact match and F1 of each question's best span against its gold answers."""
        if rows is None:
            raise fail("question-answering metrics need the encoded rows (contexts and answers)",
                       "pass rows=the loader's dataset to Task.metrics")
        by_index = {row["index"]: row for row in rows}
        questions: dict[int, list[int]] = {}
        for position, index in enumerate(labels[:, 0].tolist()):
            questions.setdefault(by_index[index]["example"], []).append(position)
        values = logits.float().numpy()
        scores = []
        for positions in questions.values():
            windows = [by_index[int(labels[p, 0])] for p in positions]
            span = best_span([values[p] for p in positions], [w["context_offsets"] for w in windows],
                             max_answer_tokens=windows[0]["max_answer_length"])
            predicted = windows[0]["context"][span.start:span.end] if span else ""
            scores.append(squad_scores(predicted, windows[0]["answers"]))
        return np.array(scores, dtype=np.float64).reshape(-1, 2)


def squad_scores(predicted: str, answers: tuple[str, ...]) -> tuple[float, float]:
    """(exact match, F1) of one prediction against its gold answers, as fractions: the official SQuAD v1.1
    normalisation and maximum over answers, through torchmetrics."""
    from torchmetrics.functional.text import squad

    result = squad([{"prediction_text": predicted, "id": "q"}],
                   [{"answers": {"text": list(answers), "answer_start": [0] * len(answers)}, "id": "q"}])
    return float(result["exact_match"]) / 100, float(result["f1"]) / 100


def _text(value, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise fail(f"{where} has no {what} (got {type(value).__name__})", f"give every row its {what} as a string")
    if not value.strip():
        raise fail(f"{where} has an empty {what}", f"give every row a non-empty {what}")
    return value


def _windows(examples, tokenizer, config):
    questions = [e.text.lstrip() for e in examples]  # leading spaces would take window room, as in the HF examples
    longest = max(len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"])
    room = config.max_length - longest - tokenizer.num_special_tokens_to_add(pair=True)
    if room <= config.doc_stride:  # the tokenizer would panic (a Rust panic, not an exception) on such windows
        raise fail(f"windows of data.max_length={config.max_length} tokens leave the longest question's context {room} "
                   f"tokens, not more than data.doc_stride={config.doc_stride}",
                   "raise data.max_length, or lower data.doc_stride (for SQuAD: 384 and 128)")
    return tokenizer(questions, [e.text_pair for e in examples], truncation="only_second", max_length=config.max_length,
                     stride=config.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)


def _cls_index(input_ids: list[int], tokenizer) -> int:
    cls = tokenizer.cls_token_id
    return input_ids.index(cls) if cls is not None and cls in input_ids else 0


def _roles(offsets: list, answer: tuple[str, int], cls: int) -> list[int]:
    roles = [IGNORED if offset is None else 0 for offset in offsets]
    roles[cls] = 0
    start, end = _answer_tokens(offsets, answer)
    start, end = (cls, cls) if start is None else (start, end)
    roles[start] += START
    roles[end] += END
    return roles


def _answer_tokens(offsets: list, answer: tuple[str, int]) -> tuple[int | None, int | None]:
    """The first and last context token of the answer, or (None, None) when this window does not hold all of it."""
    text, first_char = answer
    last_char = first_char + len(text)
    inside = [i for i, offset in enumerate(offsets) if offset is not None]
    if not inside or offsets[inside[0]][0] > first_char or offsets[inside[-1]][1] < last_char:
        return None, None
    start = next(i for i in inside if offsets[i][1] > first_char)
    end = next(i for i in reversed(inside) if offsets[i][0] < last_char)
    return start, max(start, end)


def _roles_of(labels: Tensor) -> Tensor:
    return labels[:, 1:]


def _targets(roles: Tensor, bit: int) -> Tensor:
    """Each row's first token whose role has `bit` (every window has one: the answer, or [CLS])."""
    marked = (roles != IGNORED) & ((roles.clamp(min=0) & bit) > 0)
    return marked.int().argmax(-1)


TASKS.add("question_answering", QuestionAnswering(
    name="question_answering", problem_type="question_answering", decoder="span", primary_metric="f1",
    summary_columns=("f1", "exact_match", "agreement", "kl_to_teacher"), label_dtype=torch.long))
