"""What the layer-wise terms share: the (student, teacher) layer mapping, feature checks, TinyBERT's projection.

No term is registered here, so the term modules of distill/terms/ can all import it (the registry imports
them in turn, and a term module importing another term module would import it half-built).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from alembert.errors import fail
from distill.models import Features

LAYER_KINDS = ("uniform", "last_k", "explicit")


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


def mapped_pairs(layers: str | Sequence, k: int, n_student: int, n_teacher: int) -> tuple[tuple[int, int], ...]:
    if isinstance(layers, str):
        return layer_map(layers, n_student, n_teacher, k=k)
    return layer_map("explicit", n_student, n_teacher, explicit=layers)


def mapped_teacher_layers(term: Callable, params: dict, n_student: int, n_teacher: int) -> frozenset[int]:
    """The teacher layers a term over `mapped_pairs` reads, from its `layers`/`k` parameters or their defaults
    (so the teacher cache keeps only those layers' features)."""
    defaults = {name: parameter.default for name, parameter in inspect.signature(term).parameters.items()}
    layers, k = params.get("layers", defaults["layers"]), params.get("k", defaults.get("k", 1))
    return frozenset(teacher for _, teacher in mapped_pairs(layers, k, n_student, n_teacher))


def embedding_output(term: Callable, params: dict, n_student: int, n_teacher: int) -> frozenset[int]:
    """A term that reads the embedding output only (layer 0)."""
    return frozenset({0})


# ---------------------------------------------------------------- shared checks and masked means

def require_feature(features: Features, field: str, term: str, who: str) -> tuple[Tensor, ...]:
    value = getattr(features, field)
    if not value:
        raise fail(f"the '{term}' loss needs the {who}'s {field}, but the forward pass gave none",
                   "run the model with this feature enabled (attentions need attn_implementation='eager'; "
                   "values need the value hooks)")
    return value


def token_mask(student: Features, teacher: Features, mask: Tensor | None) -> Tensor:
    if teacher is None:
        raise fail("a layer-wise loss needs a teacher", "pass a teacher, or drop the layer-wise terms")
    mask = student.attention_mask if mask is None else mask
    return mask.to(student.logits.dtype)


def same_shape(student: Tensor, teacher: Tensor, what: str, fix: str) -> None:
    if student.shape != teacher.shape:
        raise fail(f"student {what} {tuple(student.shape)} and teacher {what} {tuple(teacher.shape)} differ", fix)


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


def project_hidden(hidden: Tensor, layer: int, target: Tensor, projection: HiddenProjection | None, term: str) -> Tensor:
    if projection is not None:
        hidden = projection(hidden, layer)
    elif hidden.shape[-1] != target.shape[-1]:
        raise fail(f"'{term}': student hidden size {hidden.shape[-1]} differs from the teacher's {target.shape[-1]}",
                   f"pass projection=HiddenProjection({hidden.shape[-1]}, {target.shape[-1]}, n_student_layers)")
    same_shape(hidden, target, "hidden states", "student and teacher must see the same batch (same tokens)")
    return hidden
