"""Logit-level terms: Hinton's soft targets, hard labels and logit MSE, reduced the way the task says.

A task picks the output rows a soft term averages over (`Task.positions`): every sequence for classification,
the labelled tokens for token classification, so padding and ignored sub-tokens never count.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from alembert.errors import fail
from distill.losses import register, task_rows, task_of_features
from distill.models import Features


@register("kd", soft_target_temperature=1.0)
def kd_loss(student: Features, teacher: Features, *, mask: Tensor | None = None, temperature: float = 1.0,
            scale_by_t2: bool = True) -> Tensor:
    """The task's soft targets: Hinton's KL at temperature T for a distribution, MSE for a regression output."""
    task, s_logits, t_logits = task_rows(student, teacher, "kd")
    return task.soft_loss(s_logits, t_logits, temperature, scale_by_t2=scale_by_t2)


@register("hard", needs_teacher=False, reads_labels=True)
def hard_loss(student: Features, teacher: Features | None, *, mask: Tensor | None = None) -> Tensor:
    """The task's loss against the gold labels (cross-entropy, or MSE for regression)."""
    if student.labels is None:
        raise fail("the hard-label loss needs labels", "give a labelled training set or set the hard-label weight to 0")
    return task_of_features(student, "hard").hard_loss(student.logits, student.labels)


@register("logit_mse")
def logit_mse_loss(student: Features, teacher: Features, *, mask: Tensor | None = None) -> Tensor:
    """MSE between logits: the alternative to KL, and how regression tasks distil."""
    _, s_logits, t_logits = task_rows(student, teacher, "logit_mse")
    return F.mse_loss(s_logits, t_logits)
