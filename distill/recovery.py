"""Recovery distillation for compress: the engine and KD objective behind alembert.training.Distiller."""

from __future__ import annotations

from torch import nn
from torch.utils.data import DataLoader

from alembert.tasks.base import Task
from alembert.training import KDConfig, TrainConfig
from distill.engine import fit
from distill.losses import kd_objective
from distill.models import Teacher


def kd_recovery(student: nn.Module, teacher: nn.Module, train: DataLoader, dev: DataLoader | None, *, kd: KDConfig,
                train_config: TrainConfig, task: Task) -> nn.Module:
    """Train `student` towards the frozen `teacher` (the model from before compression) on `train`."""
    fit(student, train, dev, kd_objective(kd, task=task), train_config, teacher=Teacher(teacher), desc="recovery")
    teacher.cpu()  # recovery may train on a GPU (train.device); the passes after it work on the CPU
    return student.cpu().eval()
