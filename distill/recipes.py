"""Recipes: distillation objectives as configuration.

A recipe is a list of stages (TinyBERT's intermediate-then-prediction schedule is two stages);
a stage is a list of loss terms with weights, parameters and optional schedules. This module
turns that configuration into Objectives, plus any trainable helper modules a term needs.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

from torch import nn
from transformers import PretrainedConfig

from alembert.config import from_dict
from alembert.errors import fail
from distill.layer_features import HiddenProjection
from distill.losses import LOSSES, Objective, Term
from distill.layerdrop import check_layerdrop
from distill.theseus import ReplacementConfig, check_objective

SCHEDULE_KINDS = {
    "constant": lambda start, end, t: start,
    "linear": lambda start, end, t: start + (end - start) * t,
    "cosine": lambda start, end, t: end + (start - end) * 0.5 * (1 + math.cos(math.pi * t)),
}


@dataclass(frozen=True)
class Schedule:
    """A value that moves from `start` to `end` over training (progress 0 -> 1)."""

    kind: str = "constant"
    start: float = 1.0
    end: float = 1.0

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise fail(f"schedule kind '{self.kind}' is unknown", f"use one of {', '.join(SCHEDULE_KINDS)}")

    def at(self, progress: float) -> float:
        return SCHEDULE_KINDS[self.kind](self.start, self.end, min(max(progress, 0.0), 1.0))


@dataclass(frozen=True)
class TermConfig:
    """One loss term: its registered name, weight, parameters, and schedules for the weight or any parameter.

    `schedules` maps "weight" or a parameter name (e.g. "temperature") to a Schedule. Teacher annealing
    is `schedules: {weight: {kind: linear, start: w, end: 0}}`.
    """

    name: str
    weight: float = 1.0
    params: dict = field(default_factory=dict)
    schedules: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StageConfig:
    name: str = "distil"
    epochs: int | None = None  # None: train.epochs
    terms: tuple[TermConfig, ...] = ()
    replacement: ReplacementConfig | None = None  # BERT-of-Theseus module replacement while this stage trains


@dataclass(frozen=True)
class RecipeConfig:
    name: str = "kd"
    stages: tuple[StageConfig, ...] = (StageConfig(),)


# Term arguments that the engine (mask) or the stage (a shared projection) supplies, never the recipe.
SUPPLIED = frozenset({"mask", "projection"})


def term_parameters(name: str) -> frozenset[str]:
    """The parameters a recipe may set on the registered term `name`: its keyword-only arguments."""
    signature = inspect.signature(LOSSES[name].fn)
    return frozenset(p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY) - SUPPLIED


def check_recipe(recipe: RecipeConfig, *, layerdrop: float | None = None, unlabelled: bool = False) -> None:
    """Every term known, every parameter and schedule one its term takes, no layer-wise term beside module replacement
    or LayerDrop, no label-reading term on an `unlabelled` transfer set: one line before any model loads."""
    for stage in recipe.stages:
        for term in stage.terms:
            allowed = term_parameters(term.name)
            unknown = sorted(set(term.params) - allowed) + sorted(set(term.schedules) - allowed - {"weight"})
            if unknown:
                raise fail(f"recipe stage '{stage.name}': the {term.name} term has no parameter {', '.join(unknown)}",
                           f"its parameters are: {', '.join(sorted(allowed)) or '(none)'}; schedules may also name weight")
            _schedules(term.schedules, f"{stage.name}.{term.name}.schedules.")
            if unlabelled and LOSSES[term.name].reads_labels and (term.weight != 0 or term.schedules):
                raise fail(f"the transfer set holds unlabelled examples (data.labelled_examples or data.transfer), but "
                           f"recipe stage '{stage.name}' weights the {term.name} term, which reads labels",
                           "use soft targets only, e.g. recipe=kd kd.alpha=0, or drop the unlabelled examples")
        objective = Objective(tuple(Term(t.name, t.weight) for t in stage.terms))  # every name is known by now
        if stage.replacement is not None:
            check_objective(objective)
        if layerdrop is not None:
            check_layerdrop(objective)


def layer_methods(recipe: RecipeConfig, *, layerdrop: float | None = None) -> tuple[str, ...]:
    """What in the recipe (and train.layerdrop) needs a student with transformer layers."""
    terms = sorted({t.name for stage in recipe.stages for t in stage.terms if Objective((Term(t.name, t.weight),)).reads_layers})
    replacement = ("module replacement",) if any(stage.replacement is not None for stage in recipe.stages) else ()
    return (*(f"the layer-wise term {name}" for name in terms), *replacement, *(("LayerDrop",) if layerdrop else ()))


def _schedules(raw: dict, path: str = "schedules.") -> tuple[tuple[str, Schedule], ...]:
    return tuple((key, value if isinstance(value, Schedule) else from_dict(Schedule, value, path=f"{path}{key}."))
                 for key, value in raw.items())


def stage_objective(stage: StageConfig, student: PretrainedConfig, teacher: PretrainedConfig) -> tuple[Objective, tuple[nn.Module, ...]]:
    """The Objective for one stage, and the trainable modules (projections) it adds to the optimiser."""
    if not stage.terms:
        raise fail(f"recipe stage '{stage.name}' has no loss terms", "list at least one term, e.g. {name: kd, weight: 1.0}")
    unknown = [t.name for t in stage.terms if t.name not in LOSSES]
    if unknown:
        raise fail(f"recipe stage '{stage.name}' names unknown loss term(s) {unknown}", f"use one of {sorted(LOSSES)}")
    projection = _projection(stage, student, teacher)
    terms = []
    for term in stage.terms:
        params = dict(term.params)
        if projection is not None and LOSSES[term.name].projected:
            params["projection"] = projection  # one projection shared by the embedding and hidden terms
        terms.append(Term(term.name, term.weight, tuple(params.items()), _schedules(term.schedules)))
    return Objective(tuple(terms)), (projection,) if projection is not None else ()


def _projection(stage: StageConfig, student: PretrainedConfig, teacher: PretrainedConfig) -> HiddenProjection | None:
    if not any(LOSSES[t.name].projected for t in stage.terms) or student.hidden_size == teacher.hidden_size:
        return None
    return HiddenProjection(student.hidden_size, teacher.hidden_size, student.num_hidden_layers)
