"""Layer-wise distillation terms: DistilBERT's cosine loss, TinyBERT's layer MSEs, MiniLM's relation KLs.

All terms are pure functions over `Features`, registered in `distill.losses.LOSSES` like `kd`. Conventions:
- Layers are numbered 1..L as in `Features.hidden_states`: layer m is hidden_states[m], attentions[m - 1]
  and values[m - 1]; the embedding output (hidden_states[0]) has its own term, `tinybert_embedding`.
- `layers=` is a mapping kind ("uniform", "last_k" with `k=`) or an explicit sequence (see `layer_map`);
  a term over several layer pairs returns the mean over pairs, so its weight does not grow with depth
  (TinyBERT sums: multiply the weight by the number of pairs to match it).
- Padding never counts: tokens with mask 0 are dropped as queries and as keys, and every mean is over real
  entries only, so values at padded positions cannot change a loss.
- transformers returns attention maps *after* attention dropout in train mode (rows no longer sum to 1, some
  entries exactly 0); attention terms want a student with attention dropout 0 (attention_probs_dropout_prob,
  DistilBERT: attention_dropout), or they fit the dropout noise.
- What each term reads (hidden states, attention maps, values) is a flag on its registration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from alembert.errors import fail
from distill.layer_features import (LAYER_KINDS, HiddenProjection, embedding_output, layer_map,  # noqa: F401  (API)
                                    mapped_pairs, mapped_teacher_layers, project_hidden, require_feature, same_shape,
                                    token_mask)
from distill.losses import register, task_rows
from distill.models import Features, split_heads  # noqa: F401  split_heads is part of this module's API

# Probabilities are clamped before a log so that an exact 0 (underflow, dropout) gives a large finite term, not inf.
PROB_FLOOR = 1e-12
# "log_probs" attention MSE: floor well above PROB_FLOOR, so near-zero entries cannot dominate the squared error.
LOG_PROB_FLOOR = 1e-6


def _masked_token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Mean of a (batch, seq) tensor over real tokens."""
    return (per_token * mask).sum() / mask.sum().clamp_min(1)


def _masked_row_mean(per_row: Tensor, mask: Tensor) -> Tensor:
    """Mean of a (batch, heads, seq) tensor over heads and real query positions."""
    weights = mask[:, None, :].expand_as(per_row)
    return (per_row * weights).sum() / weights.sum().clamp_min(1)


def _kl_rows(teacher_probs: Tensor, student_probs: Tensor, mask: Tensor) -> Tensor:
    """KL(teacher || student) over the last axis (keys), after dropping padded keys and renormalising,
    averaged over heads and real query rows."""
    keys = mask[:, None, None, :]
    teacher_probs = teacher_probs * keys
    student_probs = student_probs * keys
    teacher_probs = teacher_probs / teacher_probs.sum(-1, keepdim=True).clamp_min(PROB_FLOOR)
    student_probs = student_probs / student_probs.sum(-1, keepdim=True).clamp_min(PROB_FLOOR)
    # teacher 0 entries (padded keys included) contribute 0 whatever the floor makes of their log.
    per_row = (teacher_probs * (teacher_probs.clamp_min(PROB_FLOOR).log() - student_probs.clamp_min(PROB_FLOOR).log())).sum(-1)
    return _masked_row_mean(per_row, mask)


# ---------------------------------------------------------------- DistilBERT

@register("distilbert_cos", needs_hidden=True, teacher_layers=mapped_teacher_layers)
def distilbert_cosine_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                           layers: str | Sequence = "last_k", k: int = 1) -> Tensor:
    """1 - cos(student_h, teacher_h) per real token, on the mapped layers (default: last <-> last)."""
    mask = token_mask(student, teacher, mask)
    s_hidden = require_feature(student, "hidden_states", "distilbert_cos", "student")
    t_hidden = require_feature(teacher, "hidden_states", "distilbert_cos", "teacher")
    losses = []
    for s, t in mapped_pairs(layers, k, len(s_hidden) - 1, len(t_hidden) - 1):
        same_shape(s_hidden[s], t_hidden[t], "hidden states", "the cosine loss needs equal hidden sizes: "
                    "use tinybert_hidden with a HiddenProjection for a narrower student")
        cosine = F.cosine_similarity(s_hidden[s], t_hidden[t], dim=-1)
        losses.append(_masked_token_mean(1 - cosine, mask))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- TinyBERT

def _masked_mse(student_h: Tensor, teacher_h: Tensor, mask: Tensor) -> Tensor:
    """MSE over real tokens and hidden units (TinyBERT averages over padding too; we don't)."""
    per_token = (student_h - teacher_h).pow(2).mean(-1)
    return _masked_token_mean(per_token, mask)


@register("tinybert_embedding", needs_hidden=True, projected=True, teacher_layers=embedding_output)
def tinybert_embedding_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                            projection: HiddenProjection | None = None) -> Tensor:
    """MSE between embedding outputs (hidden_states[0]), projected through slot 0 when sizes differ."""
    mask = token_mask(student, teacher, mask)
    s_embedding = require_feature(student, "hidden_states", "tinybert_embedding", "student")[0]
    t_embedding = require_feature(teacher, "hidden_states", "tinybert_embedding", "teacher")[0]
    return _masked_mse(project_hidden(s_embedding, 0, t_embedding, projection, "tinybert_embedding"), t_embedding, mask)


@register("tinybert_hidden", needs_hidden=True, projected=True, teacher_layers=mapped_teacher_layers)
def tinybert_hidden_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                         layers: str | Sequence = "uniform", k: int = 1,
                         projection: HiddenProjection | None = None) -> Tensor:
    """MSE between mapped layer outputs, the student's projected through `projection` (its layer's slot)."""
    mask = token_mask(student, teacher, mask)
    s_hidden = require_feature(student, "hidden_states", "tinybert_hidden", "student")
    t_hidden = require_feature(teacher, "hidden_states", "tinybert_hidden", "teacher")
    losses = [_masked_mse(project_hidden(s_hidden[s], s, t_hidden[t], projection, "tinybert_hidden"), t_hidden[t], mask)
              for s, t in mapped_pairs(layers, k, len(s_hidden) - 1, len(t_hidden) - 1)]
    return torch.stack(losses).mean()


@register("tinybert_attention", needs_attentions=True, teacher_layers=mapped_teacher_layers)
def tinybert_attention_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                            layers: str | Sequence = "uniform", k: int = 1, space: str = "probs") -> Tensor:
    """MSE between mapped attention maps over (real query, real key) entries, mean over heads and entries.

    TinyBERT compares pre-softmax scores, which transformers does not return. space="probs" (default)
    compares the post-softmax maps: bounded, no floors needed. space="log_probs" compares log-probabilities
    (scores up to a per-row shift), floored at LOG_PROB_FLOOR.
    """
    if space not in ("probs", "log_probs"):
        raise fail(f"tinybert_attention space='{space}' is unknown", "use space=probs or space=log_probs")
    mask = token_mask(student, teacher, mask)
    s_maps = require_feature(student, "attentions", "tinybert_attention", "student")
    t_maps = require_feature(teacher, "attentions", "tinybert_attention", "teacher")
    entries = (mask[:, :, None] * mask[:, None, :])[:, None]  # (batch, 1, query, key)
    losses = []
    for s, t in mapped_pairs(layers, k, len(s_maps), len(t_maps)):
        s_map, t_map = s_maps[s - 1], t_maps[t - 1]
        same_shape(s_map, t_map, f"attention maps (layers {s}/{t})", "attention MSE needs the same number of heads "
                    "(no projection exists for attention maps): use minilm_value with relation_heads instead")
        if space == "log_probs":
            s_map, t_map = s_map.clamp_min(LOG_PROB_FLOOR).log(), t_map.clamp_min(LOG_PROB_FLOOR).log()
        weights = entries.expand_as(s_map)
        losses.append(((s_map - t_map).pow(2) * weights).sum() / weights.sum().clamp_min(1))
    return torch.stack(losses).mean()


@register("tinybert_pred")
def tinybert_prediction_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                             temperature: float = 1.0) -> Tensor:
    """Soft cross-entropy -sum softmax(t/T) log_softmax(s/T), mean over the batch (the task's; MSE for regression).

    It equals `kd` without T² scaling plus the teacher's entropy (a constant), so the gradients match.
    """
    if temperature <= 0:
        raise fail(f"tinybert_pred temperature={temperature} must be positive", "use temperature=1 as TinyBERT does")
    task, s_logits, t_logits = task_rows(student, teacher, "tinybert_pred")
    return task.soft_cross_entropy(s_logits, t_logits, temperature)


# ---------------------------------------------------------------- MiniLM

@register("minilm_attention", needs_attentions=True, teacher_layers=mapped_teacher_layers)
def minilm_attention_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                          layers: str | Sequence = "last_k", k: int = 1) -> Tensor:
    """KL(teacher || student) of self-attention distributions over real keys, mean over heads and real queries.

    Works across hidden sizes; needs equal head counts (use minilm_value's relation heads otherwise).
    """
    mask = token_mask(student, teacher, mask)
    s_maps = require_feature(student, "attentions", "minilm_attention", "student")
    t_maps = require_feature(teacher, "attentions", "minilm_attention", "teacher")
    losses = []
    for s, t in mapped_pairs(layers, k, len(s_maps), len(t_maps)):
        same_shape(s_maps[s - 1], t_maps[t - 1], f"attention maps (layers {s}/{t})",
                    "attention-distribution KL needs the same number of heads: drop minilm_attention and use "
                    "minilm_value with relation_heads=R")
        losses.append(_kl_rows(t_maps[t - 1], s_maps[s - 1], mask))
    return torch.stack(losses).mean()


def value_relation(values: Tensor, mask: Tensor, relation_heads: int | None = None) -> Tensor:
    """softmax(V Vᵀ / sqrt(d)) per head over real keys: (batch, heads, seq, head_dim) -> (batch, R, seq, seq).

    With `relation_heads` (MiniLM-v2), the heads are concatenated back to (batch, seq, hidden) and split
    into R equal relation heads, so models with different head counts can be compared.
    """
    if relation_heads is not None:
        batch, heads, seq, head_dim = values.shape
        hidden = heads * head_dim
        if relation_heads < 1 or hidden % relation_heads:
            raise fail(f"relation_heads={relation_heads} does not divide the value width {hidden}",
                       "pick relation_heads dividing both the student's and the teacher's hidden size")
        values = values.transpose(1, 2).reshape(batch, seq, relation_heads, hidden // relation_heads).transpose(1, 2)
    scores = values @ values.transpose(-1, -2) / math.sqrt(values.shape[-1])
    # padded keys get no weight; a finite floor keeps an all-padding row finite (uniform) instead of NaN
    scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


@register("minilm_value", needs_values=True, teacher_layers=mapped_teacher_layers)
def minilm_value_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                      layers: str | Sequence = "last_k", k: int = 1, relation_heads: int | None = None) -> Tensor:
    """KL(teacher VR || student VR) of value relations, mean over heads and real queries.

    Needs only the same number of (relation) heads: head_dim may differ, so no projection is needed.
    """
    mask = token_mask(student, teacher, mask)
    s_values = require_feature(student, "values", "minilm_value", "student")
    t_values = require_feature(teacher, "values", "minilm_value", "teacher")
    losses = []
    for s, t in mapped_pairs(layers, k, len(s_values), len(t_values)):
        s_heads, t_heads = s_values[s - 1].shape[1], t_values[t - 1].shape[1]
        if relation_heads is None and s_heads != t_heads:
            raise fail(f"minilm_value: student has {s_heads} heads and teacher {t_heads}",
                       "set relation_heads=R with R dividing both hidden sizes (MiniLM-v2 relation heads)")
        s_relation = value_relation(s_values[s - 1], mask, relation_heads)
        t_relation = value_relation(t_values[t - 1], mask, relation_heads)
        same_shape(s_relation, t_relation, "value relations", "student and teacher must see the same batch")
        losses.append(_kl_rows(t_relation, s_relation, mask))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- what a recipe needs
