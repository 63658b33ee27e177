"""Inference over a loader, shared by every stage: logits and labels in order, and the task metrics on them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from alembert.batching import in_dataset_order
from alembert.tasks import task_of
from alembert.modeldir import MODEL_INPUTS
from alembert.tagging import IGNORED


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


@torch.no_grad()
def predict_logits(model: nn.Module, data: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (as the task keeps them for evaluation: Task.eval_outputs) and labels over a whole loader, in order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    task = task_of(model.config)
    for batch in data:
        inputs = {key: value for key, value in to_device(batch, device).items() if key in MODEL_INPUTS}
        kept, gold = task.eval_outputs(task.output_logits(model(**inputs)), batch["labels"].to(device))
        logits.append(kept.float().cpu())
        labels.append(gold.cpu())
    model.train(was_training)
    # batches of a token task differ in width: the task pads them to one
    logits, labels = task.gather(logits, 0.0), task.gather(labels, IGNORED)
    return in_dataset_order(logits, data.sampler), in_dataset_order(labels, data.sampler)


def label_names_of(config) -> tuple[str, ...] | None:
    id2label = getattr(config, "id2label", None) or {}
    return tuple(id2label[i] for i in range(len(id2label))) if id2label else None


def evaluate(model: nn.Module, data: DataLoader) -> dict[str, float]:
    """The metrics of the model's task (from its config) over a loader."""
    logits, labels = predict_logits(model, data)
    return task_of(model.config).metrics(logits, labels, label_names_of(model.config), rows=data.dataset)
