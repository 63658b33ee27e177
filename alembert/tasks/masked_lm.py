"""Masked-LM on raw text: DistilBERT's task-agnostic distillation, as one more task.

The rows are unlabelled text (one sentence per line of a .txt file, or data.text_column of a table or hub
dataset); each batch is masked afresh (alembert/masking.py), and the labels are the original ids at the masked
positions, -100 elsewhere. So the usual terms apply unchanged: `hard` is the student's MLM cross-entropy and
`kd` Hinton's soft targets on the teacher's MLM distributions, both over the masked tokens only.

Evaluation keeps, per token, the predicted id and the log-probability of the original one, not a row as wide
as the vocabulary: metrics are masked-token accuracy and perplexity, agreement is top-1 agreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from alembert import demo
from alembert.errors import fail
from alembert.masking import IGNORE, MaskedRows, masking_collate
from alembert.tables import read_texts
from alembert.tasks import TASKS
from alembert.tasks.base import TokenOutputs
from alembert.tasks.classification import SequenceClassification

PREDICTED, GOLD_LOG_PROB = 0, 1  # the two numbers evaluation keeps per token


@dataclass(frozen=True)
class MaskedLanguageModel(TokenOutputs, SequenceClassification):
    @property
    def model_class(self):
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM

    def head_kwargs(self, label_names: tuple[str, ...] | None) -> dict:
        return {"problem_type": self.problem_type}

    def labelled(self) -> bool:
        return False

    def repeats_inputs(self) -> bool:
        return False

    def augmentable(self) -> bool:
        return False  # the corpus is the transfer set already

    def one_output_per_text(self) -> bool:
        return False

    def onnx_outputs(self) -> dict[str, dict[int, str]]:
        return {"logits": {0: "batch", 1: "sequence"}}

    # --- data ---

    def read_file(self, path: Path, config) -> list[tuple]:
        """A text file, one sentence per line (blank lines skipped), or data.text_column of a .csv/.tsv/.jsonl."""
        return [(text, None, None, *where) for text, _, _, *where in read_texts(path, config, "corpus file")]

    def demo_rows(self, config) -> dict[str, list[tuple]]:
        return {split: [(r["sentence"], None, None) for r in rows] for split, rows in demo.generate(config).items()}

    def parse_row(self, text, pair, label, index: dict[str, int], where: str) -> tuple:
        text = "" if text is None else str(text).strip()
        if not text:
            raise fail(f"{where} has no text", "drop empty lines from the corpus")
        return text, None, None

    def label_names(self, raw_labels) -> None:
        return None

    def encode(self, examples, tokenizer, config, label_names: tuple[str, ...] | None = None) -> MaskedRows:
        """Token ids with the special-token mask; the collate masks each batch (data.masking)."""
        encoded = tokenizer([e.text for e in examples], truncation=True, max_length=config.max_length,
                            return_special_tokens_mask=True)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask") if k in encoded]
        return MaskedRows([{**{k: encoded[k][i] for k in keys}, "index": i} for i in range(len(examples))], config.masking)

    def collate_fn(self, rows: MaskedRows, tokenizer, seed: int = 0):
        return masking_collate(tokenizer, rows.masking, seed)

    # --- losses: the token task's, over the masked positions ---

    def positions(self, labels: Tensor | None, attention_mask: Tensor) -> Tensor:
        return labels != IGNORE if labels is not None else attention_mask.bool()

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if not (labels != IGNORE).any():
            return logits.sum() * 0.0  # nothing masked in this batch: no signal, but no NaN
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

    def soft_loss(self, student: Tensor, teacher: Tensor, temperature: float, *, scale_by_t2: bool = True) -> Tensor:
        if student.shape[-1] != teacher.shape[-1]:
            raise fail(f"student and teacher vocabularies differ ({student.shape[-1]} vs {teacher.shape[-1]})",
                       "masked-LM distillation needs a student that shares the teacher's tokenizer")
        if not len(student):
            return student.sum() * 0.0
        return super().soft_loss(student, teacher, temperature, scale_by_t2=scale_by_t2)

    # --- evaluation ---

    def eval_outputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """[predicted id, log-probability of the original id] per token (0 where nothing was masked)."""
        gold = labels.clamp(min=0).unsqueeze(-1)
        log_prob = torch.log_softmax(logits.float(), dim=-1).gather(-1, gold).squeeze(-1)
        log_prob = log_prob.masked_fill(labels == IGNORE, 0.0)
        return torch.stack([logits.argmax(-1).float(), log_prob], dim=-1), labels

    def metrics(self, logits: Tensor, labels: Tensor, label_names: tuple[str, ...] | None = None,
                rows=None) -> dict[str, float]:
        """Accuracy and perplexity over the masked tokens (`logits` as eval_outputs keeps them)."""
        chosen = labels != IGNORE
        if not chosen.any():
            return {"accuracy": 0.0, "perplexity": math.inf}
        correct = logits[..., PREDICTED][chosen].long() == labels[chosen]
        nll = -logits[..., GOLD_LOG_PROB][chosen].double().mean()
        return {"accuracy": float(correct.float().mean()), "perplexity": float(torch.exp(nll))}

    def agreement(self, student: Tensor, teacher: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """How often the student's top prediction at a masked token is the teacher's."""
        chosen = labels != IGNORE if labels is not None else torch.ones(student.shape[:2], dtype=torch.bool)
        same = student[..., PREDICTED][chosen] == teacher[..., PREDICTED][chosen]
        return {"agreement": float(same.float().mean()) if chosen.any() else 0.0}


TASKS.add("masked_lm", MaskedLanguageModel(
    name="masked_lm", problem_type="masked_lm", decoder=None, primary_metric="accuracy",
    summary_columns=("accuracy", "perplexity", "agreement"), label_dtype=torch.long))
