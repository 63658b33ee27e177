"""Single-label sequence classification (and sentence pairs): one distribution over the labels per sequence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from torch import Tensor

from alembert.errors import fail
from alembert.tasks import TASKS
from alembert.tasks.base import Task, soft_targets


@dataclass(frozen=True)
class SequenceClassification(Task):
    def label_names(self, raw_labels) -> tuple[str, ...]:
        names = {str(label).strip() for label in raw_labels}
        try:
            return tuple(sorted(names, key=lambda name: float(name)))  # numeric labels keep numeric order
        except ValueError:
            return tuple(sorted(names))

    def head_kwargs(self, label_names: tuple[str, ...] | None) -> dict:
        if label_names is None:
            return {}
        return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                "label2id": {name: i for i, name in enumerate(label_names)}}

    def stand_in_label(self):
        return 0

    def parse_label(self, label, index: dict[str, int], where: str) -> int:
        key = str(label).strip()
        if key not in index:
            raise fail(f"{where}: label '{key}' is not one of the training labels {sorted(index)}",
                       "fix the label, or add examples of it to the training set")
        return index[key]

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels)

    def soft_loss(self, student: Tensor, teacher: Tensor, temperature: float, *, scale_by_t2: bool = True) -> Tensor:
        return soft_targets(student, teacher, temperature, scale_by_t2=scale_by_t2)

    def soft_cross_entropy(self, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        teacher_probs = F.softmax(teacher / temperature, dim=-1)
        return -(teacher_probs * F.log_softmax(student / temperature, dim=-1)).sum(-1).mean()

    def metrics(self, logits: Tensor, labels: Tensor, label_names: tuple[str, ...] | None = None,
                rows=None) -> dict[str, float]:
        """Accuracy, F1 (binary, or macro over more labels) and MCC."""
        predictions = logits.argmax(-1).numpy()
        gold = labels.numpy()
        average = "binary" if logits.shape[-1] == 2 else "macro"
        return {
            "accuracy": float(accuracy_score(gold, predictions)),
            "f1": float(f1_score(gold, predictions, average=average, zero_division=0)),
            "mcc": float(matthews_corrcoef(gold, predictions)),
        }

    def agreement(self, student: Tensor, teacher: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """Prediction agreement, and KL(teacher || student) at T=1."""
        agree = (student.argmax(-1) == teacher.argmax(-1)).float().mean()
        kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
        return {"agreement": float(agree), "kl_to_teacher": float(kl)}

    def example_counts(self, logits: Tensor, labels: Tensor, label_names: tuple[str, ...] | None = None,
                       rows=None) -> np.ndarray:
        """[correct, 1] per example: accuracy is the first column's sum over the second's."""
        correct = (logits.argmax(-1) == labels).numpy().astype(np.int64)
        return np.stack([correct, np.ones_like(correct)], axis=-1)

    def score_counts(self, summed: np.ndarray) -> np.ndarray:
        summed = np.asarray(summed, dtype=np.float64)
        return summed[..., 0] / np.maximum(summed[..., 1], 1.0)

    def mix(self, logits: list[Tensor], weights: Tensor, temperature: float) -> Tensor:
        """T * log(sum_i w_i softmax(z_i / T)): a weighted logsumexp of log-probabilities, so confident teachers
        do not underflow."""
        stacked = torch.stack([z.float() for z in logits])  # (teachers, ..., classes)
        w = weights.to(stacked.device).view(-1, *([1] * (stacked.dim() - 1)))
        log_probs = torch.log_softmax(stacked / temperature, dim=-1)
        return temperature * torch.logsumexp(log_probs + w.log(), dim=0)


TASKS.add("classification", SequenceClassification(
    name="classification", problem_type="single_label_classification", decoder="softmax", primary_metric="accuracy",
    summary_columns=("accuracy", "agreement", "kl_to_teacher"), label_dtype=torch.long))
