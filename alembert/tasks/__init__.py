"""Tasks: one object per kind of task owns everything that differs between them, so no stage branches on it.

A Task knows its Auto model class and head, how labels are read and collated, its logit-level losses (how
soft and hard targets reduce), its metrics and the one that selects models, how close a student is to its
teacher, its ONNX outputs, the torch-free decoder the runtime uses, and its summary columns. A saved model
says its task through `config.problem_type` (transformers' own field); `task_of` reads it back.

Each module of this package registers one task in TASKS on import; the registry imports them on first lookup.
A new task is one module here plus its YAML and tests.
"""

from __future__ import annotations

from alembert.errors import fail
from alembert.registry import Registry

TASKS = Registry("task", package="alembert.tasks")  # name -> Task, e.g. "classification", "regression"


def task_named(name: str):
    return TASKS.get(name)


def check_deployable(task, what: str) -> None:
    """Refuse, in one line, to compress or export a model that is a checkpoint to fine-tune, not an end model."""
    if not task.deployable():
        raise fail(f"{what} does not take a {task.name} model: it is a checkpoint to fine-tune on a task, not an end model",
                   "fine-tune it first (python -m distill student.init=DIR data=...) and pass that run's student")


def task_of(config):
    """The task of a model: its config's problem_type; else the head its `architectures` name, when exactly one task
    has that head (a token model saved by plain transformers); else, as transformers infers it, its label count."""
    problem_type = getattr(config, "problem_type", None)
    for _, task in TASKS.items():
        if problem_type == task.problem_type:
            return task
    heads = [task for _, task in TASKS.items() if _has_head(config, task)]
    if len(heads) == 1:
        return heads[0]
    fallback = "regression" if getattr(config, "num_labels", 2) == 1 else "classification"
    return TASKS.get(fallback)


def _has_head(config, task) -> bool:
    head = task.model_class.__name__.removeprefix("AutoModel")  # e.g. "ForTokenClassification"
    return any(name.endswith(head) for name in getattr(config, "architectures", None) or ())
