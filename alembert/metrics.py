"""Task metrics with scikit-learn and scipy (evaluate.load needs the hub, which is unreachable offline)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def task_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, F1 (binary or macro) and MCC for classification; Pearson/Spearman/MSE for regression."""
    if logits.shape[-1] == 1:
        predictions = logits.squeeze(-1).numpy()
        gold = labels.float().numpy()
        constant = np.std(predictions) == 0 or np.std(gold) == 0
        return {
            "pearson": 0.0 if constant else float(pearsonr(predictions, gold)[0]),
            "spearman": 0.0 if constant else float(spearmanr(predictions, gold)[0]),
            "mse": float(np.mean((predictions - gold) ** 2)),
        }
    predictions = logits.argmax(-1).numpy()
    gold = labels.numpy()
    average = "binary" if logits.shape[-1] == 2 else "macro"
    return {
        "accuracy": float(accuracy_score(gold, predictions)),
        "f1": float(f1_score(gold, predictions, average=average, zero_division=0)),
        "mcc": float(matthews_corrcoef(gold, predictions)),
    }


def teacher_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict[str, float]:
    """How close a student is to its teacher: prediction agreement and KL(teacher || student) at T=1."""
    if student_logits.shape[-1] == 1:
        return {"mse_to_teacher": float(F.mse_loss(student_logits, teacher_logits))}
    agree = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean()
    kl = F.kl_div(F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1), log_target=True, reduction="batchmean")
    return {"agreement": float(agree), "kl_to_teacher": float(kl)}


def primary_metric(metrics: dict[str, float]) -> str:
    return "accuracy" if "accuracy" in metrics else "pearson"
