"""Masked-LM terms: the student's MLM cross-entropy and soft targets on the teacher's MLM distributions.

With an MLM model, `Features.logits` are (batch, seq, vocab) and `Features.labels` the MLM labels (-100 where unmasked).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from alembert.errors import fail
from distill.losses import register, soft_targets
from distill.mlm import IGNORE
from distill.models import Features

KD_POSITIONS = ("masked", "all")


def _masked_positions(student: Features, term: str) -> Tensor:
    if student.labels is None or student.labels.dim() != 2 or student.logits.dim() != 3:
        raise fail(f"the '{term}' term needs masked-LM logits and labels", "use it with distil_mlm on a raw-text corpus")
    return student.labels != IGNORE


@register("mlm", needs_teacher=False)
def mlm_loss(student: Features, teacher: Features | None, *, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy of the student's MLM predictions with the original tokens, at masked positions only."""
    positions = _masked_positions(student, "mlm")
    if not positions.any():
        return student.logits.sum() * 0.0  # nothing masked in this batch: no signal, but no NaN
    return F.cross_entropy(student.logits[positions], student.labels[positions])


@register("mlm_kd", soft_target_temperature=2.0)
def mlm_kd_loss(student: Features, teacher: Features, *, mask: Tensor | None = None, temperature: float = 2.0,
                scale_by_t2: bool = True, positions: str = "masked") -> Tensor:
    """Soft targets on the teacher's MLM distributions, averaged over tokens (times T²).

    positions="masked" distils the masked tokens only; "all" every real token (DistilBERT's default, with
    `restrict_ce_to_mask` off), which gives more signal per batch at a higher cost.
    """
    if positions not in KD_POSITIONS:
        raise fail(f"mlm_kd positions='{positions}' is unknown", f"use one of {', '.join(KD_POSITIONS)}")
    chosen = _masked_positions(student, "mlm_kd") if positions == "masked" else student.attention_mask.bool()
    if not chosen.any():
        return student.logits.sum() * 0.0
    if student.logits.shape[-1] != teacher.logits.shape[-1]:
        raise fail(f"student and teacher vocabularies differ ({student.logits.shape[-1]} vs {teacher.logits.shape[-1]})",
                   "masked-LM distillation needs a student that shares the teacher's tokenizer")
    return soft_targets(student.logits[chosen], teacher.logits[chosen], temperature, scale_by_t2=scale_by_t2)
