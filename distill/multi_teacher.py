"""Several teachers as one: the student's soft targets are the weighted average of the teachers' distributions.

`MultiTeacher` has the `.features(batch, ...)` method the engine calls on a teacher, so it plugs into `fit`
(and into the teacher-logit cache) unchanged. Its logits are chosen so that the `kd` term, which applies
softmax(logits / T), sees exactly the mixture sum_i w_i softmax(z_i / T) of the teachers' tempered
distributions:

    logits = T * log(sum_i w_i * softmax(z_i / T))

This holds at the MultiTeacher's own `temperature`, which must therefore equal the kd term's temperature. At
another kd temperature T' the student sees the mixture sharpened (T' < T) or flattened (T' > T) by T / T'.
A temperature schedule on the kd term is not followed. The task mixes (alembert.tasks: Task.mix): a regression
task has no distribution and takes the weighted mean of the teachers' outputs, which `kd` fits by MSE.
The same holds for masked-LM teachers: the mixture is taken over the vocabulary at every token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedModel

from alembert.errors import fail
from distill.losses import LOSSES
from distill.cross_tokenizer import teacher_view
from distill.models import Features, Teacher, forward_features


class MultiTeacher:
    """Frozen teachers sharing a tokenizer and label set, mixed with positive weights (normalised to sum 1)."""

    def __init__(self, teachers: Sequence[PreTrainedModel], weights: Sequence[float] | None = None, *,
                 temperature: float = 1.0):
        teachers = list(teachers)
        if len(teachers) < 1:
            raise fail("a multi-teacher needs at least one teacher", "list the teacher model directories in teachers=[...]")
        weights = [1.0] * len(teachers) if weights is None else [float(w) for w in weights]
        if len(weights) != len(teachers):
            raise fail(f"{len(weights)} teacher weights for {len(teachers)} teachers", "give exactly one weight per teacher")
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise fail(f"teacher weights {weights} must all be positive", "drop a teacher instead of giving it weight 0")
        if not (math.isfinite(temperature) and temperature > 0):
            raise fail(f"multi-teacher temperature={temperature} must be positive", "use the kd term's temperature")
        check_compatible([t.config for t in teachers])
        self.teachers = [Teacher(model) for model in teachers]
        self.weights = torch.tensor(weights) / sum(weights)
        self.temperature = temperature

    @property
    def model(self) -> PreTrainedModel:
        """The first teacher, for code that needs one config (e.g. building a student from alternate layers)."""
        return self.teachers[0].model

    def to(self, device: torch.device) -> MultiTeacher:
        for teacher in self.teachers:  # every teacher, not only the first that `model` names
            teacher.to(device)
        return self

    @torch.no_grad()
    def features(self, batch: dict[str, Tensor], *, hidden: bool = False, attentions: bool = False,
                 values: bool = False) -> Features:
        if hidden or attentions or values:
            raise fail("a multi-teacher gives soft targets only; hidden-state and attention terms need one teacher",
                       "use a recipe of kd and hard terms with several teachers, or a single teacher for layer-wise terms")
        outputs = [forward_features(t.model, teacher_view(batch)) for t in self.teachers]
        task = outputs[0].task
        return Features(logits=task.mix([o.logits for o in outputs], self.weights, self.temperature),
                        attention_mask=batch["attention_mask"], labels=batch.get("labels"), task=task)


def soft_target_temperature(stages: Sequence) -> float:
    """The one temperature of the recipe's soft-target terms (kd), which the mixture must be taken at.

    `stages` are recipe StageConfigs. Different temperatures, or a scheduled one, cannot be matched by one
    mixture and are refused; a recipe without soft-target terms gets 1.0.
    """
    found = set()
    for stage in stages:
        for term in stage.terms:
            default = LOSSES[term.name].soft_target_temperature
            if default is not None:
                if "temperature" in term.schedules:
                    raise fail(f"the {term.name} term schedules its temperature, which a multi-teacher mixture cannot follow",
                               "use a constant temperature with several teachers")
                found.add(float(term.params.get("temperature", default)))
    if len(found) > 1:
        raise fail(f"the recipe's soft-target terms use temperatures {sorted(found)}",
                   "use one temperature for every kd term when distilling from several teachers")
    return found.pop() if found else 1.0


def check_compatible(configs: Sequence) -> None:
    """Teachers must agree on the outputs the student distils: label count and names, or vocabulary."""
    first = configs[0]
    for index, config in enumerate(configs[1:], start=2):
        if config.vocab_size != first.vocab_size:
            raise fail(f"teacher {index} has a vocabulary of {config.vocab_size} tokens but teacher 1 has {first.vocab_size}",
                       "multi-teacher distillation needs teachers that share one tokenizer")
        if config.num_labels != first.num_labels:
            raise fail(f"teacher {index} has {config.num_labels} labels but teacher 1 has {first.num_labels}",
                       "give teachers fine-tuned on the same task with the same labels")
        names, first_names = _label_names(config), _label_names(first)
        if names and first_names and names != first_names:
            raise fail(f"teacher {index} orders its labels {names} but teacher 1 {first_names}",
                       "re-save the teachers with the same id2label order")


def check_same_tokenizer(tokenizers: Sequence) -> None:
    """Equal vocabularies, token for token: the same input ids must mean the same text to every teacher."""
    first = tokenizers[0].get_vocab()
    for index, tokenizer in enumerate(tokenizers[1:], start=2):
        if tokenizer.get_vocab() != first:
            raise fail(f"teacher {index}'s tokenizer differs from teacher 1's",
                       "multi-teacher distillation needs teachers that share one tokenizer (same vocab.txt / tokenizer.json)")


def _label_names(config) -> tuple[str, ...] | None:
    """Real label names, or None for the generic LABEL_i names transformers invents."""
    names = tuple(config.id2label[i] for i in range(config.num_labels)) if getattr(config, "id2label", None) else ()
    return None if not names or all(str(n).startswith("LABEL_") for n in names) else names
