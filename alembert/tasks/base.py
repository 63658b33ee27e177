"""The Task interface every task module implements (see alembert/tasks/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_targets(student_logits: Tensor, teacher_logits: Tensor, temperature: float, *, scale_by_t2: bool = True) -> Tensor:
    """Hinton's KL(teacher_T || student_T), averaged over the batch (over tokens, for (tokens, vocab) rows), times T²
    so gradients keep their size across T."""
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2 if scale_by_t2 else kl


@dataclass(frozen=True)
class Task:
    name: str  # data.task_type picks it
    problem_type: str  # what transformers writes to config.json for it
    decoder: str  # the torch-free output decoder of the ONNX runtime (alembert.decoding)
    primary_metric: str  # the dev metric that selects epochs and models (larger is better)
    summary_columns: tuple[str, ...]  # the metric columns of a run's summary table
    label_dtype: torch.dtype

    @property
    def model_class(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def onnx_outputs(self) -> dict[str, dict[int, str]]:
        """Output names and their dynamic axes."""
        return {"logits": {0: "batch"}}

    def label_names(self, raw_labels) -> tuple[str, ...] | None:
        raise NotImplementedError

    def head_kwargs(self, label_names: tuple[str, ...] | None) -> dict:
        """What from_pretrained / from_config need to build this task's head."""
        raise NotImplementedError

    def parse_label(self, label, index: dict[str, int], where: str):
        raise NotImplementedError

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def soft_loss(self, student: Tensor, teacher: Tensor, temperature: float, *, scale_by_t2: bool = True) -> Tensor:
        """The teacher's soft targets as a loss (Hinton's KL for a distribution; MSE where there is none)."""
        raise NotImplementedError

    def soft_cross_entropy(self, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        """TinyBERT's prediction-layer loss."""
        raise NotImplementedError

    def soft_term(self, preferred: str) -> str:
        """The registered loss term that distils this task's logits, given the recipe's choice (kd | logit_mse)."""
        return preferred

    def metrics(self, logits: Tensor, labels: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def agreement(self, student: Tensor, teacher: Tensor) -> dict[str, float]:
        """How close a student's outputs are to its teacher's."""
        raise NotImplementedError

    def mix(self, logits: list[Tensor], weights: list[float], temperature: float) -> Tensor:
        """Several teachers' outputs as one teacher's (multi-teacher distillation)."""
        raise NotImplementedError
