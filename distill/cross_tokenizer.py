"""A student with its own tokenizer (`student.tokenizer`): teacher and student read the same raw text, each
tokenised by its own tokenizer, and are compared output to output (TextBrewer supports this too).

Each training row holds the student's encoding and, under "teacher", the teacher's encoding of the same text; the
collated batch carries the teacher's inputs under `teacher_`-prefixed keys, which `teacher_view` hands to the teacher.
Only logit-level terms can compare the two: layer-wise terms need aligned tokens and are refused, as are tasks with
one output per token or span.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from alembert.errors import fail
from alembert.modeldir import MODEL_INPUTS

TEACHER_PREFIX = "teacher_"
TEACHER_ROW = "teacher"


class PairedRows(Dataset):
    """Student rows, each with the teacher's encoding of the same example under "teacher"."""

    def __init__(self, student_rows, teacher_rows):
        if len(student_rows) != len(teacher_rows):
            raise ValueError("paired rows differ in count")  # a caller's bug: both encode one split
        self.student_rows, self.teacher_rows = student_rows, teacher_rows

    def __len__(self) -> int:
        return len(self.student_rows)

    def __getitem__(self, index: int) -> dict:
        return {**self.student_rows[index], TEACHER_ROW: self.teacher_rows[index]}


def paired_collate(student_collate: Callable, teacher_collate: Callable) -> Callable[[list[dict]], dict]:
    def collate(rows: list[dict]) -> dict:
        batch = student_collate([{k: v for k, v in row.items() if k != TEACHER_ROW} for row in rows])
        teacher = teacher_collate([row[TEACHER_ROW] for row in rows])
        return {**batch, **{TEACHER_PREFIX + key: value for key, value in teacher.items() if key in MODEL_INPUTS}}
    return collate


def paired_loader(student: DataLoader, teacher: DataLoader) -> DataLoader:
    """`student`'s loader (its batch size, order and collate) whose batches also carry the teacher's encoding."""
    return DataLoader(PairedRows(student.dataset, teacher.dataset), batch_size=student.batch_size,
                      shuffle=isinstance(student.sampler, RandomSampler), generator=student.generator,
                      collate_fn=paired_collate(student.collate_fn, teacher.collate_fn))


def teacher_view(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch as the teacher reads it: its own encoding where the batch carries one, else the batch itself."""
    if TEACHER_PREFIX + "input_ids" not in batch:
        return batch
    own = {key[len(TEACHER_PREFIX):]: value for key, value in batch.items() if key.startswith(TEACHER_PREFIX)}
    return {**{k: v for k, v in batch.items() if k not in MODEL_INPUTS and not k.startswith(TEACHER_PREFIX)}, **own}


def check_cross_tokenizer(task, stages) -> None:
    """Refuse, in one line each, what cannot work when teacher and student tokenise differently (`stages`: the
    recipe's, every term name already checked)."""
    from distill.losses import Objective, Term

    if not task.one_output_per_text():
        raise fail(f"student.tokenizer does not work for the {task.name} task: its outputs are per token or span, "
                   "which two tokenizers do not align", "use the teacher's tokenizer (student.tokenizer=null) for this task")
    for stage in stages:
        objective = Objective(tuple(Term(term.name, term.weight) for term in stage.terms))
        if objective.needs_hidden or objective.needs_attentions or objective.needs_values:
            raise fail(f"recipe stage '{stage.name}' has layer-wise terms, which need the teacher's and the student's tokens aligned; "
                       "with student.tokenizer only logit-level terms work", "use recipe=kd (or drop student.tokenizer)")
