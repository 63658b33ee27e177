"""Loss terms: pure functions over named student and teacher features.

Every term has the signature `fn(student, teacher, *, mask, **params) -> Tensor` and is
registered once under its name; a recipe is a list of (name, weight, params).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from alembert.tasks.base import Task
from alembert.errors import fail
from alembert.registry import Registry
from alembert.tasks.base import soft_targets  # noqa: F401  (the KL the terms share, defined once in the base)
from alembert.training import KDConfig
from distill.models import LAYER_FIELDS, Features

LossFn = Callable[..., Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss term and what it needs, as flags (no side lists elsewhere say it)."""

    fn: LossFn
    needs_teacher: bool = True
    needs_hidden: bool = False
    needs_attentions: bool = False
    needs_values: bool = False
    projected: bool = False  # compares hidden states through a learned projection when widths differ (TinyBERT)
    soft_target_temperature: float | None = None  # softens the teacher at this default temperature (a KD term)
    reads_labels: bool = False  # reads the gold labels: refused on an unlabelled transfer set (data.labelled_examples)
    # (term, params, n_student, n_teacher) -> the teacher layers it reads (1-based, 0 = embedding output), so the
    # teacher cache keeps only those; None: every layer
    teacher_layers: Callable[[LossFn, dict, int, int], frozenset[int]] | None = None


# Each module of distill/terms/ registers its terms on import; the registry imports them on first lookup.
LOSSES: Registry[LossSpec] = Registry("loss term", package="distill.terms")


def register(name: str, **flags):
    """Register a loss term under `name` with its LossSpec flags; a second registration of the name is refused."""

    def wrap(fn: LossFn) -> LossFn:
        LOSSES.add(name, LossSpec(fn, **flags))
        return fn

    return wrap


def task_of_features(features: Features, term: str) -> Task:
    """The task whose reduction a logit-level term uses; forward_features sets it from the model's config."""
    if features.task is None:
        raise fail(f"the '{term}' term needs features that name their task", "build them with distill.models.forward_features")
    return features.task


def task_rows(student: Features, teacher: Features, term: str) -> tuple[Task, Tensor, Tensor]:
    """The task, and the student's and teacher's distributions its logit-level losses compare (the student's batch
    says which rows: both sides see the same ones)."""
    task = task_of_features(student, term)
    rows = [task.soft_rows(side.logits, student.labels, student.attention_mask) for side in (student, teacher)]
    return task, rows[0], rows[1]


@dataclass(frozen=True)
class Term:
    """A registered loss term with its weight and parameters.

    `schedules` holds (target, schedule) pairs: target "weight" or a parameter name; each schedule has
    `.at(progress) -> value` for training progress in [0, 1] (teacher annealing, temperature schedules).
    """

    name: str
    weight: float
    params: tuple[tuple[str, object], ...] = ()
    schedules: tuple[tuple[str, object], ...] = ()

    def resolved(self, progress: float) -> tuple[float, dict]:
        """The weight and parameters at this point of training."""
        params = dict(self.params)
        weight = self.weight
        for target, schedule in self.schedules:
            if target == "weight":
                weight = schedule.at(progress)
            else:
                params[target] = schedule.at(progress)
        return weight, params


@dataclass(frozen=True)
class Objective:
    """A weighted sum of registered terms; calling it returns (total, {term: value})."""

    terms: tuple[Term, ...]
    specs: tuple[LossSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        unknown = [t.name for t in self.terms if t.name not in LOSSES]
        if unknown:
            raise fail(f"unknown loss term(s) {unknown}", f"use one of {sorted(LOSSES)}")
        active = tuple(t for t in self.terms if t.weight != 0 or t.schedules)
        object.__setattr__(self, "specs", tuple(LOSSES[t.name] for t in active))
        object.__setattr__(self, "terms", active)

    @property
    def needs_teacher(self) -> bool:
        return any(s.needs_teacher for s in self.specs)

    @property
    def needs_hidden(self) -> bool:
        return any(s.needs_hidden for s in self.specs)

    @property
    def needs_attentions(self) -> bool:
        return any(s.needs_attentions for s in self.specs)

    @property
    def needs_values(self) -> bool:
        return any(s.needs_values for s in self.specs)

    @property
    def reads_layers(self) -> bool:
        """True when a term reads per-layer features (hidden states, attention maps, values), not just logits."""
        return self.needs_hidden or self.needs_attentions or self.needs_values

    def teacher_reads(self, n_student: int, n_teacher: int) -> dict[str, frozenset[int]]:
        """For each per-layer Features field the terms read, the positions in its tuple they index (see LAYER_FIELDS)."""
        reads: dict[str, set[int]] = {}
        for term, spec in zip(self.terms, self.specs):
            layers = (spec.teacher_layers(spec.fn, dict(term.params), n_student, n_teacher) if spec.teacher_layers
                      else range(n_teacher + 1))
            for name, (flag, offset) in LAYER_FIELDS.items():
                if getattr(spec, f"needs_{flag}"):
                    reads.setdefault(name, set()).update(m - offset for m in layers if m >= offset)
        return {name: frozenset(positions) for name, positions in reads.items()}

    def __call__(self, student: Features, teacher: Features | None, progress: float = 0.0) -> tuple[Tensor, dict[str, float]]:
        """The weighted total and each term's unweighted value; `progress` in [0, 1] drives schedules."""
        total = torch.zeros((), device=student.logits.device)
        parts: dict[str, float] = {}
        for term, spec in zip(self.terms, self.specs):
            weight, params = term.resolved(progress)
            value = spec.fn(student, teacher, mask=student.attention_mask, **params)
            parts[term.name] = float(value.detach())
            total = total + weight * value
        return total, parts


def kd_objective(config: KDConfig, *, task: Task) -> Objective:
    if not 0.0 <= config.alpha <= 1.0:
        raise fail(f"kd.alpha={config.alpha} is outside [0, 1]", "alpha is the hard-label weight: pick a value in [0, 1]")
    if config.temperature <= 0:
        raise fail(f"kd.temperature={config.temperature} must be positive", "use a temperature such as 1, 2 or 4")
    soft = task.soft_term(config.soft_loss)
    params = (("temperature", config.temperature), ("scale_by_t2", config.scale_by_t2)) if soft == "kd" else ()
    return Objective((Term("hard", config.alpha), Term(soft, 1.0 - config.alpha, params)))


# The layer-wise (DistilBERT, TinyBERT, MiniLM) terms register themselves on import.
