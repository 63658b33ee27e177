"""Sequence regression (e.g. STS-B): one float per sequence, from a one-output head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from torch import Tensor

from alembert.errors import fail
from alembert.tasks import TASKS
from alembert.tasks.base import Task


@dataclass(frozen=True)
class SequenceRegression(Task):
    def label_names(self, raw_labels) -> None:
        return None

    def head_kwargs(self, label_names: tuple[str, ...] | None) -> dict:
        return {"num_labels": 1, "problem_type": "regression"}

    def stand_in_label(self):
        return 0.0

    def parse_label(self, label, index: dict[str, int], where: str) -> float:
        try:
            value = float(label)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise fail(f"{where}: label '{label}' is not a finite number", "regression needs a float label in every row")
        return value

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.mse_loss(logits.squeeze(-1), labels.float())

    def soft_loss(self, student: Tensor, teacher: Tensor, temperature: float, *, scale_by_t2: bool = True) -> Tensor:
        """A one-output head has no distribution to soften: it distils with MSE."""
        return F.mse_loss(student, teacher)

    def soft_cross_entropy(self, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        return F.mse_loss(student, teacher)

    def soft_term(self, preferred: str) -> str:
        return "logit_mse"

    def metrics(self, logits: Tensor, labels: Tensor, label_names: tuple[str, ...] | None = None,
                rows=None) -> dict[str, float]:
        """Pearson, Spearman and MSE (the correlations are 0 when either side is constant)."""
        predictions = logits.squeeze(-1).numpy()
        gold = labels.float().numpy()
        constant = np.std(predictions) == 0 or np.std(gold) == 0
        return {
            "pearson": 0.0 if constant else float(pearsonr(predictions, gold)[0]),
            "spearman": 0.0 if constant else float(spearmanr(predictions, gold)[0]),
            "mse": float(np.mean((predictions - gold) ** 2)),
        }

    def agreement(self, student: Tensor, teacher: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        return {"mse_to_teacher": float(F.mse_loss(student, teacher))}

    def mix(self, logits: list[Tensor], weights: Tensor, temperature: float) -> Tensor:
        stacked = torch.stack([z.float() for z in logits])
        w = weights.to(stacked.device).view(-1, *([1] * (stacked.dim() - 1)))
        return (w * stacked).sum(dim=0)


TASKS.add("regression", SequenceRegression(
    name="regression", problem_type="regression", decoder="score", primary_metric="pearson",
    summary_columns=("pearson", "spearman", "mse", "mse_to_teacher"), label_dtype=torch.float32))
