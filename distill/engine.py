"""The training engine: one loop for teacher fine-tuning, distillation and the no-KD baseline.

`fit` trains a student against an Objective (optionally with a frozen Teacher) and keeps the
best dev checkpoint in memory; `evaluate` and `predict_logits` run it.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from distill.errors import fail
from distill.losses import Objective
from distill.metrics import primary_metric, task_metrics
from distill.models import CachedTeacher, Teacher, forward_features


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    cache_teacher: bool = True  # compute teacher logits once and reuse them every epoch
    grad_accum: int = 1  # optimizer step every N batches: an effective batch of batch_size * grad_accum
    precision: str = "fp32"  # fp32 | bf16 (autocast; the weights stay fp32)
    patience: int | None = None  # stop after this many epochs without a better dev metric


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass
class History:
    """Per-epoch dev metrics and mean loss terms, and the best epoch kept."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = -math.inf


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(model: nn.Module, train: DataLoader, dev: DataLoader | None, objective: Objective, config: TrainConfig, *,
        teacher: Teacher | CachedTeacher | None = None, extra_modules: tuple[nn.Module, ...] = (),
        keep_best: bool = True, desc: str = "train") -> History:
    """Train `model` in place; with `keep_best` it ends holding the weights of its best dev epoch.

    Intermediate stages (layer-wise losses only) pass keep_best=False: their dev metric says nothing yet.
    `extra_modules` (e.g. TinyBERT's hidden projection) are optimised with the model but are not part of it.
    """
    if objective.needs_teacher and teacher is None:
        raise fail("the objective has soft-target terms but no teacher was given", "pass a teacher or use hard labels only")
    if len(train) == 0:
        raise fail("the training set has no batches", "give a non-empty training set")
    if config.precision not in PRECISIONS or config.grad_accum < 1:
        raise fail(f"train.precision={config.precision}, train.grad_accum={config.grad_accum} are not valid",
                   f"use precision in {', '.join(PRECISIONS)} and grad_accum >= 1")
    if teacher is not None and config.cache_teacher and not (objective.needs_hidden or objective.needs_attentions
                                                             or objective.needs_values):
        teacher = CachedTeacher.build(teacher, train)
    seed_everything(config.seed)
    parameters = [p for module in (model, *extra_modules) for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * math.ceil(len(train) / config.grad_accum)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    history, best_state = History(), None
    for epoch in range(config.epochs):
        terms = _train_epoch(model, train, objective, teacher, optimizer, scheduler, config, parameters,
                             epoch=epoch, desc=f"{desc} {epoch + 1}/{config.epochs}")
        metrics = evaluate(model, dev) if dev is not None else {}
        history.epochs.append({"epoch": epoch + 1, **terms, **metrics})
        score = metrics[primary_metric(metrics)] if metrics else -terms["loss"]
        if score > history.best_metric:
            history.best_epoch, history.best_metric = epoch + 1, score
            best_state = copy.deepcopy(model.state_dict())
        tqdm.write(f"{desc} epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in history.epochs[-1].items() if k != "epoch"))
        if config.patience is not None and epoch + 1 - history.best_epoch >= config.patience:
            tqdm.write(f"{desc}: no better dev metric for {config.patience} epoch(s), stopping early")
            break
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    return history


def _train_epoch(model, train, objective, teacher, optimizer, scheduler, config, parameters, *, epoch: int,
                 desc: str) -> dict[str, float]:
    model.train()
    sums: dict[str, float] = {}
    wanted = dict(hidden=objective.needs_hidden, attentions=objective.needs_attentions, values=objective.needs_values)
    dtype = PRECISIONS[config.precision]
    batches = len(train)
    progress = tqdm(train, desc=desc, leave=False, dynamic_ncols=True)
    for index, batch in enumerate(progress):
        step = epoch * batches + index
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            teacher_features = teacher.features(batch, **wanted) if objective.needs_teacher else None
            student_features = forward_features(model, batch, **wanted)
            loss, parts = objective(student_features, teacher_features, progress=step / (config.epochs * batches))
        if not torch.isfinite(loss):
            bad = next((name for name, value in parts.items() if not math.isfinite(value)), "the total")
            raise fail(f"the loss became {float(loss)} at step {step} (epoch {epoch + 1}) in term '{bad}'",
                       "lower the learning rate, raise warmup, or check the data; the last dev-best weights were not saved")
        (loss / config.grad_accum).backward()
        if (index + 1) % config.grad_accum == 0 or index + 1 == batches:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        for name, value in {"loss": float(loss.detach()), **parts}.items():
            sums[name] = sums.get(name, 0.0) + value
        progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
    return {name: total / len(train) for name, total in sums.items()}


@torch.no_grad()
def predict_logits(model: nn.Module, data: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over a whole loader, in order."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in data:
        logits.append(forward_features(model, batch).logits.float())
        labels.append(batch["labels"])
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, data: DataLoader) -> dict[str, float]:
    logits, labels = predict_logits(model, data)
    return task_metrics(logits, labels)
