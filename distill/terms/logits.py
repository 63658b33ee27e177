"""Logit-level terms of a sequence classifier: Hinton's soft targets, hard labels and logit MSE."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from alembert.errors import fail
from distill.losses import register, soft_targets
from distill.models import Features


@register("kd", soft_target_temperature=1.0, classifier_only=True)
def kd_loss(student: Features, teacher: Features, *, mask: Tensor | None = None, temperature: float = 1.0,
            scale_by_t2: bool = True) -> Tensor:
    """Soft targets; a one-output regression head has no distribution, so it distils with MSE instead."""
    if student.logits.shape[-1] == 1:
        return F.mse_loss(student.logits, teacher.logits)
    return soft_targets(student.logits, teacher.logits, temperature, scale_by_t2=scale_by_t2)


@register("hard", needs_teacher=False, classifier_only=True)
def hard_loss(student: Features, teacher: Features | None, *, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy with the gold labels, or MSE for a one-output regression head."""
    if student.labels is None:
        raise fail("the hard-label loss needs labels", "give a labelled training set or set the hard-label weight to 0")
    if student.logits.shape[-1] == 1:
        return F.mse_loss(student.logits.squeeze(-1), student.labels.float())
    return F.cross_entropy(student.logits, student.labels)


@register("logit_mse", classifier_only=True)
def logit_mse_loss(student: Features, teacher: Features, *, mask: Tensor | None = None) -> Tensor:
    """MSE between logits: the alternative to KL, and how regression tasks distil."""
    return F.mse_loss(student.logits, teacher.logits)
