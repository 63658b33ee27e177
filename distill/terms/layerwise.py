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
from torch import Tensor, nn

from alembert.errors import fail
from distill.losses import register, task_rows
from distill.models import Features, split_heads  # noqa: F401  split_heads is part of this module's API

LAYER_KINDS = ("uniform", "last_k", "explicit")
# Probabilities are clamped before a log so that an exact 0 (underflow, dropout) gives a large finite term, not inf.
PROB_FLOOR = 1e-12
# "log_probs" attention MSE: floor well above PROB_FLOOR, so near-zero entries cannot dominate the squared error.
LOG_PROB_FLOOR = 1e-6


# ---------------------------------------------------------------- layer mapping

def layer_map(kind: str, student_layers: int, teacher_layers: int, explicit: Sequence | None = None,
              *, k: int = 1) -> tuple[tuple[int, int], ...]:
    """Pairs (student layer, teacher layer), 1-based.

    uniform: student m <-> teacher floor(m*N/M), m = 1..M, so the last layers meet (TinyBERT's g(m) = m*N/M).
    last_k:  the last k student layers <-> the last k teacher layers, in order (k=1: last <-> last).
    explicit: either one teacher layer per student layer ([4, 8, 12]) or (student, teacher) pairs.
    """
    if kind not in LAYER_KINDS:
        raise fail(f"unknown layer mapping '{kind}'", f"use one of {', '.join(LAYER_KINDS)}, or give the layer pairs")
    if kind == "uniform":
        if student_layers > teacher_layers:
            raise fail(f"uniform layer mapping needs a student with no more layers than the teacher "
                       f"({student_layers} > {teacher_layers})", "use layers=last_k or explicit layer pairs")
        pairs = tuple((m, m * teacher_layers // student_layers) for m in range(1, student_layers + 1))
    elif kind == "last_k":
        if not 1 <= k <= min(student_layers, teacher_layers):
            raise fail(f"last_k mapping with k={k}, but the student has {student_layers} and the teacher "
                       f"{teacher_layers} layers", f"pick k between 1 and {min(student_layers, teacher_layers)}")
        pairs = tuple((student_layers - k + i, teacher_layers - k + i) for i in range(1, k + 1))
    else:
        pairs = _explicit_pairs(explicit)
    for student, teacher in pairs:
        _check_layer(student, student_layers, "student")
        _check_layer(teacher, teacher_layers, "teacher")
    return pairs


def _explicit_pairs(explicit: Sequence | None) -> tuple[tuple[int, int], ...]:
    if explicit is None or isinstance(explicit, str) or len(explicit) == 0:
        raise fail(f"explicit layer mapping needs a non-empty list of layers, got {explicit!r}",
                   "give teacher layers per student layer, e.g. [4, 8, 12], or pairs, e.g. [[3, 12]]")
    if all(isinstance(item, int) for item in explicit):
        return tuple((m, int(t)) for m, t in enumerate(explicit, start=1))
    if all(isinstance(item, Sequence) and len(item) == 2 and all(isinstance(x, int) for x in item) for item in explicit):
        return tuple((int(s), int(t)) for s, t in explicit)
    raise fail(f"cannot read the explicit layer mapping {explicit!r}",
               "give integers (teacher layer per student layer) or [student, teacher] integer pairs")


def _check_layer(layer: int, n_layers: int, who: str) -> None:
    if not 1 <= layer <= n_layers:
        raise fail(f"the layer mapping names {who} layer {layer}, but the {who} has layers 1..{n_layers}",
                   f"pick {who} layers between 1 and {n_layers} (the embedding output has its own term)")


def _pairs(layers: str | Sequence, k: int, n_student: int, n_teacher: int) -> tuple[tuple[int, int], ...]:
    if isinstance(layers, str):
        return layer_map(layers, n_student, n_teacher, k=k)
    return layer_map("explicit", n_student, n_teacher, explicit=layers)


# ---------------------------------------------------------------- shared checks and masked means

def _require(features: Features, field: str, term: str, who: str) -> tuple[Tensor, ...]:
    value = getattr(features, field)
    if not value:
        raise fail(f"the '{term}' loss needs the {who}'s {field}, but the forward pass gave none",
                   "run the model with this feature enabled (attentions need attn_implementation='eager'; "
                   "values need the value hooks)")
    return value


def _token_mask(student: Features, teacher: Features, mask: Tensor | None) -> Tensor:
    if teacher is None:
        raise fail("a layer-wise loss needs a teacher", "pass a teacher, or drop the layer-wise terms")
    mask = student.attention_mask if mask is None else mask
    return mask.to(student.logits.dtype)


def _same_shape(student: Tensor, teacher: Tensor, what: str, fix: str) -> None:
    if student.shape != teacher.shape:
        raise fail(f"student {what} {tuple(student.shape)} and teacher {what} {tuple(teacher.shape)} differ", fix)


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

@register("distilbert_cos", needs_hidden=True)
def distilbert_cosine_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                           layers: str | Sequence = "last_k", k: int = 1) -> Tensor:
    """1 - cos(student_h, teacher_h) per real token, on the mapped layers (default: last <-> last)."""
    mask = _token_mask(student, teacher, mask)
    s_hidden = _require(student, "hidden_states", "distilbert_cos", "student")
    t_hidden = _require(teacher, "hidden_states", "distilbert_cos", "teacher")
    losses = []
    for s, t in _pairs(layers, k, len(s_hidden) - 1, len(t_hidden) - 1):
        _same_shape(s_hidden[s], t_hidden[t], "hidden states", "the cosine loss needs equal hidden sizes: "
                    "use tinybert_hidden with a HiddenProjection for a narrower student")
        cosine = F.cosine_similarity(s_hidden[s], t_hidden[t], dim=-1)
        losses.append(_masked_token_mean(1 - cosine, mask))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- TinyBERT

class HiddenProjection(nn.Module):
    """TinyBERT's learnable student->teacher hidden projection W_h, kept outside the student.

    One Linear per student hidden state (slot 0 = embedding output, slot m = layer m), so each layer learns
    its own map; `shared=True` uses a single Linear for all slots, as the official TinyBERT code does.
    The engine owns it: optimise it with the student, save it with checkpoints, leave it out of the export.
    """

    def __init__(self, student_hidden: int, teacher_hidden: int, n_layers: int, *, shared: bool = False):
        super().__init__()
        self.student_hidden, self.teacher_hidden, self.n_layers, self.shared = student_hidden, teacher_hidden, n_layers, shared
        slots = 1 if shared else n_layers + 1
        self.maps = nn.ModuleList(nn.Linear(student_hidden, teacher_hidden) for _ in range(slots))

    def forward(self, hidden: Tensor, layer: int) -> Tensor:
        if not 0 <= layer <= self.n_layers:
            raise fail(f"HiddenProjection has slots for student layers 0..{self.n_layers}, asked for {layer}",
                       "build it with n_layers = the student's number of layers")
        if hidden.shape[-1] != self.student_hidden:
            raise fail(f"HiddenProjection expects student hidden size {self.student_hidden}, got {hidden.shape[-1]}",
                       "build it with the student's hidden size")
        return self.maps[0 if self.shared else layer](hidden)


def _projected(hidden: Tensor, layer: int, target: Tensor, projection: HiddenProjection | None, term: str) -> Tensor:
    if projection is not None:
        hidden = projection(hidden, layer)
    elif hidden.shape[-1] != target.shape[-1]:
        raise fail(f"'{term}': student hidden size {hidden.shape[-1]} differs from the teacher's {target.shape[-1]}",
                   f"pass projection=HiddenProjection({hidden.shape[-1]}, {target.shape[-1]}, n_student_layers)")
    _same_shape(hidden, target, "hidden states", "student and teacher must see the same batch (same tokens)")
    return hidden


def _masked_mse(student_h: Tensor, teacher_h: Tensor, mask: Tensor) -> Tensor:
    """MSE over real tokens and hidden units (TinyBERT averages over padding too; we don't)."""
    per_token = (student_h - teacher_h).pow(2).mean(-1)
    return _masked_token_mean(per_token, mask)


@register("tinybert_embedding", needs_hidden=True, projected=True)
def tinybert_embedding_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                            projection: HiddenProjection | None = None) -> Tensor:
    """MSE between embedding outputs (hidden_states[0]), projected through slot 0 when sizes differ."""
    mask = _token_mask(student, teacher, mask)
    s_embedding = _require(student, "hidden_states", "tinybert_embedding", "student")[0]
    t_embedding = _require(teacher, "hidden_states", "tinybert_embedding", "teacher")[0]
    return _masked_mse(_projected(s_embedding, 0, t_embedding, projection, "tinybert_embedding"), t_embedding, mask)


@register("tinybert_hidden", needs_hidden=True, projected=True)
def tinybert_hidden_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                         layers: str | Sequence = "uniform", k: int = 1,
                         projection: HiddenProjection | None = None) -> Tensor:
    """MSE between mapped layer outputs, the student's projected through `projection` (its layer's slot)."""
    mask = _token_mask(student, teacher, mask)
    s_hidden = _require(student, "hidden_states", "tinybert_hidden", "student")
    t_hidden = _require(teacher, "hidden_states", "tinybert_hidden", "teacher")
    losses = [_masked_mse(_projected(s_hidden[s], s, t_hidden[t], projection, "tinybert_hidden"), t_hidden[t], mask)
              for s, t in _pairs(layers, k, len(s_hidden) - 1, len(t_hidden) - 1)]
    return torch.stack(losses).mean()


@register("tinybert_attention", needs_attentions=True)
def tinybert_attention_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                            layers: str | Sequence = "uniform", k: int = 1, space: str = "probs") -> Tensor:
    """MSE between mapped attention maps over (real query, real key) entries, mean over heads and entries.

    TinyBERT compares pre-softmax scores, which transformers does not return. space="probs" (default)
    compares the post-softmax maps: bounded, no floors needed. space="log_probs" compares log-probabilities
    (scores up to a per-row shift), floored at LOG_PROB_FLOOR.
    """
    if space not in ("probs", "log_probs"):
        raise fail(f"tinybert_attention space='{space}' is unknown", "use space=probs or space=log_probs")
    mask = _token_mask(student, teacher, mask)
    s_maps = _require(student, "attentions", "tinybert_attention", "student")
    t_maps = _require(teacher, "attentions", "tinybert_attention", "teacher")
    entries = (mask[:, :, None] * mask[:, None, :])[:, None]  # (batch, 1, query, key)
    losses = []
    for s, t in _pairs(layers, k, len(s_maps), len(t_maps)):
        s_map, t_map = s_maps[s - 1], t_maps[t - 1]
        _same_shape(s_map, t_map, f"attention maps (layers {s}/{t})", "attention MSE needs the same number of heads "
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

@register("minilm_attention", needs_attentions=True)
def minilm_attention_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                          layers: str | Sequence = "last_k", k: int = 1) -> Tensor:
    """KL(teacher || student) of self-attention distributions over real keys, mean over heads and real queries.

    Works across hidden sizes; needs equal head counts (use minilm_value's relation heads otherwise).
    """
    mask = _token_mask(student, teacher, mask)
    s_maps = _require(student, "attentions", "minilm_attention", "student")
    t_maps = _require(teacher, "attentions", "minilm_attention", "teacher")
    losses = []
    for s, t in _pairs(layers, k, len(s_maps), len(t_maps)):
        _same_shape(s_maps[s - 1], t_maps[t - 1], f"attention maps (layers {s}/{t})",
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


@register("minilm_value", needs_values=True)
def minilm_value_loss(student: Features, teacher: Features, *, mask: Tensor | None = None,
                      layers: str | Sequence = "last_k", k: int = 1, relation_heads: int | None = None) -> Tensor:
    """KL(teacher VR || student VR) of value relations, mean over heads and real queries.

    Needs only the same number of (relation) heads: head_dim may differ, so no projection is needed.
    """
    mask = _token_mask(student, teacher, mask)
    s_values = _require(student, "values", "minilm_value", "student")
    t_values = _require(teacher, "values", "minilm_value", "teacher")
    losses = []
    for s, t in _pairs(layers, k, len(s_values), len(t_values)):
        s_heads, t_heads = s_values[s - 1].shape[1], t_values[t - 1].shape[1]
        if relation_heads is None and s_heads != t_heads:
            raise fail(f"minilm_value: student has {s_heads} heads and teacher {t_heads}",
                       "set relation_heads=R with R dividing both hidden sizes (MiniLM-v2 relation heads)")
        s_relation = value_relation(s_values[s - 1], mask, relation_heads)
        t_relation = value_relation(t_values[t - 1], mask, relation_heads)
        _same_shape(s_relation, t_relation, "value relations", "student and teacher must see the same batch")
        losses.append(_kl_rows(t_relation, s_relation, mask))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- what a recipe needs
