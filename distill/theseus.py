"""BERT-of-Theseus (Xu et al. 2020): progressive module replacement.

The student's k layers are successors; successor i stands for a contiguous block of the teacher's layers (its
predecessor). While a recipe stage with `replacement:` trains, each block runs its successor with probability
p, drawn per block per step (distill/layerdrop.py's seeded draws: the same on every rank and after a resume), and
its frozen predecessor otherwise. Embeddings and the task head are the student's own (copied from the teacher,
trained). The loss is the task loss alone, as in the paper. In eval mode (dev evaluation, the saved model) only
the successors run, so what the stage selects and saves is the plain k-layer student of the teacher's family.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

from alembert.config import bounded, one_of
from alembert.errors import fail
from alembert.families import family, layer_list, replace_layer_list
from distill.layerdrop import SteppedLayers


@dataclass(frozen=True)
class ReplacementConfig:
    """How often a block runs its successor during a stage.

    schedule: constant (`rate` every step; the paper's p = 0.5) | linear (from `start` at the first step to 1 after
    the share `ramp` of the stage's steps; successor-only training from there on: the paper's curriculum).
    blocks: how many teacher layers each successor replaces, in order, summing to the teacher's depth; None splits
    them evenly (successor i gets layers floor(i*N/k) .. floor((i+1)*N/k) - 1, and the default student.teacher_layers
    initialises it from the first of them).
    """

    rate: float = bounded(0.5, low=0.0, high=1.0)
    schedule: str = one_of("constant", ("constant", "linear"))
    start: float = bounded(0.3, low=0.0, high=1.0)
    ramp: float = bounded(1.0, above=0.0, high=1.0)
    blocks: tuple[int, ...] | None = None

    def rate_at(self, progress: float) -> float:
        """The replacement probability at this point (0..1) of the stage."""
        if self.schedule == "constant":
            return self.rate
        return min(1.0, self.start + (1.0 - self.start) * progress / self.ramp)


class ReplaceableBlock(nn.Module):
    """A successor layer and the frozen teacher layers it replaces; `replaced` says which one runs in training."""

    def __init__(self, successor: nn.Module, predecessors: list[nn.Module]):
        super().__init__()
        self.successor = successor
        self.predecessors = nn.ModuleList(predecessors)
        self.replaced = True

    def forward(self, hidden_states, *args, **kwargs):
        if not self.training or self.replaced:
            return self.successor(hidden_states, *args, **kwargs)
        for layer in self.predecessors:
            output = layer(hidden_states, *args, **kwargs)
            hidden_states = output[0] if isinstance(output, tuple) else output
        return output


class TheseusLayers(SteppedLayers):
    """The student's layer list during replacement training: one ReplaceableBlock per successor."""

    salt = 2

    def __init__(self, blocks=(), *, replacement: ReplacementConfig = ReplacementConfig(), seed: int = 0):
        super().__init__(blocks, seed=seed)
        self.replacement = replacement
        self.at_step(0, 0.0)

    def at_step(self, step: int, progress: float) -> None:
        super().at_step(step, progress)
        rate = self.replacement.rate_at(progress)
        for block, draw in zip(self, self.uniforms(len(self)).tolist()):
            block.replaced = draw < rate


def block_sizes(replacement: ReplacementConfig, student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """Teacher layers per successor: the configured blocks, checked, or an even split."""
    if replacement.blocks is None:
        if student_layers > teacher_layers:
            raise fail(f"module replacement needs no more student layers than teacher layers ({student_layers} > "
                       f"{teacher_layers})", f"set student.num_layers to at most {teacher_layers}")
        edges = [i * teacher_layers // student_layers for i in range(student_layers + 1)]
        return tuple(b - a for a, b in zip(edges, edges[1:]))
    sizes = replacement.blocks
    if len(sizes) != student_layers or sum(sizes) != teacher_layers or min(sizes) < 1:
        raise fail(f"replacement.blocks={list(sizes)} does not split the teacher's {teacher_layers} layers into the "
                   f"student's {student_layers} blocks", f"give {student_layers} sizes of at least 1 summing to "
                   f"{teacher_layers}, or null for an even split")
    return tuple(sizes)


def check_objective(objective) -> None:
    """Layer-wise terms compare fixed layer pairs; with predecessors running, the student's layers are not fixed."""
    if objective.reads_layers:
        names = ", ".join(term.name for term in objective.terms)
        raise fail(f"a stage with module replacement cannot use layer-wise terms (its terms: {names})",
                   "use the task loss (hard), optionally with kd, in the replacement stage")


@contextmanager
def replacing(student: nn.Module, teacher: nn.Module, replacement: ReplacementConfig | None, *, seed: int,
              objective=None):
    """While the block runs, `student` trains with its layers replaceable by copies of the teacher's (None: unchanged).

    The student's own layer modules come back in a plain list after, so the model is a stock one again.
    """
    if replacement is None:
        yield student
        return
    if objective is not None:
        check_objective(objective)
    if family(student) != family(teacher):
        raise fail(f"module replacement needs a student of the teacher's family ({family(student)} vs {family(teacher)})",
                   "build the student from the teacher (student.init=teacher or random)")
    if student.config.hidden_size != teacher.config.hidden_size:
        raise fail(f"module replacement needs the teacher's hidden size ({student.config.hidden_size} vs "
                   f"{teacher.config.hidden_size}): successors and teacher blocks feed each other",
                   "leave student.hidden_size unset for recipe=theseus")
    successors = layer_list(student, "module replacement")
    predecessors = list(layer_list(teacher, "module replacement"))
    device = next(student.parameters()).device
    blocks, start = [], 0
    for successor, size in zip(successors, block_sizes(replacement, len(successors), len(predecessors))):
        frozen = [copy.deepcopy(layer).to(device).requires_grad_(False) for layer in predecessors[start:start + size]]
        blocks.append(ReplaceableBlock(successor, frozen))
        start += size
    replace_layer_list(student, TheseusLayers(blocks, replacement=replacement, seed=seed))
    try:
        yield student
    finally:
        replace_layer_list(student, successors)
