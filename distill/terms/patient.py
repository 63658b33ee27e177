"""BERT-PKD's patient term (Sun et al. 2019): the student learns from the teacher's intermediate layers.

For each mapped (student, teacher) layer pair, the [CLS] hidden states (position 0: [CLS] in BERT, <s> in RoBERTa)
are L2-normalised and their squared Euclidean distance is averaged over the batch; the term is the mean over
pairs. PKD-Skip is `layers=uniform` (student layer m <-> teacher layer m*N/M, every N/M-th one); PKD-Last is
`layers=last_k` with k = the student's depth (the teacher's last M layers). As in the paper, the student's last
layer is left out by default (`include_last=false`): the soft targets already cover what it outputs. Only the [CLS]
row is read, so padded positions can never move the term. A narrower student goes through TinyBERT's learned
projection before normalising (`projected`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from alembert.errors import fail
from distill.losses import register
from distill.models import Features
from distill.layer_features import (HiddenProjection, mapped_pairs, mapped_teacher_layers, project_hidden,
                                    require_feature, token_mask)


@register("pkd", needs_hidden=True, projected=True, teacher_layers=mapped_teacher_layers)
def patient_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                 layers: str | Sequence = "uniform", k: int = 1, include_last: bool = False,
                 projection: HiddenProjection | None = None) -> Tensor:
    """Mean over mapped layer pairs of mean_batch || s/||s|| - t/||t|| ||^2 on the [CLS] hidden states."""
    token_mask(student, teacher, mask)  # a teacher is required
    s_hidden = require_feature(student, "hidden_states", "pkd", "student")
    t_hidden = require_feature(teacher, "hidden_states", "pkd", "teacher")
    n_student = len(s_hidden) - 1
    pairs = [(s, t) for s, t in mapped_pairs(layers, k, n_student, len(t_hidden) - 1) if include_last or s < n_student]
    if not pairs:
        raise fail(f"the pkd term has no layer pair left for a {n_student}-layer student (its last layer is left out)",
                   "set include_last=true, or map more student layers (layers=uniform, or last_k with k >= 2)")
    losses = []
    for s, t in pairs:
        s_cls = project_hidden(s_hidden[s][:, :1], s, t_hidden[t][:, :1], projection, "pkd")[:, 0]
        t_cls = t_hidden[t][:, 0]
        distance = (F.normalize(s_cls, dim=-1) - F.normalize(t_cls, dim=-1)).pow(2).sum(-1)
        losses.append(distance.mean())
    return torch.stack(losses).mean()
