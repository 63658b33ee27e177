"""Task data for the export's checks, encoded exactly as training encodes it (alembert.data.encode and the task's
collate): calibration batches (train), parity rows and metric batches with labels (dev, else test).

So sentence pairs keep both texts, and a token task keeps its word-aligned tags (-100 on ignored sub-tokens)
and its sentences split between words where they are too long.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass

import numpy as np
import torch

from alembert.data import DataConfig, TaskData, encode, load_task, make_collate
from alembert.errors import AlembertError, fail
from alembert.tasks import task_of
from alembert.tasks.base import Task
from export.config import ExportConfig
from export.onnx import model_input_names
from export.parity import Feed, Row, pad_rows

EVAL_BATCH = 32
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class MetricBatch:
    """Model inputs (numpy) and the task's collated labels (torch) of one metric batch."""

    feed: Feed
    labels: torch.Tensor


@dataclass(frozen=True)
class TaskFeeds:
    """Task data encoded once: calibration batches, metric batches and what the parity set is cut from."""

    calibration: tuple[Feed, ...]
    metric_batches: tuple[MetricBatch, ...]
    metric_rows: tuple[dict, ...]  # the encoded rows the metric batches were collated from
    task: Task
    label_names: tuple[str, ...]  # the model's, in its id order: what the task's metrics name the classes by
    split: str
    examples: int
    label_note: str
    data: TaskData
    data_config: DataConfig

    def parity_rows(self, tokenizer, max_length: int, count: int) -> list[Row]:
        """The first `count` examples of the metric split, encoded at `max_length` (a token task splits long ones)."""
        config = dataclasses.replace(self.data_config, max_length=max_length)
        data = first(self.data, self.split, count)
        with contextlib.redirect_stdout(io.StringIO()):  # the token task's note on split sentences speaks of training data
            try:
                return encode(data, self.split, tokenizer, config)
            except AlembertError:  # too short for a span task's windows beside the question: the full windows, cut
                rows = encode(data, self.split, tokenizer, self.data_config)
                return [{key: row[key][:max_length] for key in INPUT_KEYS if key in row} for row in rows]


def load_task_feeds(config: ExportConfig, tokenizer, labels: tuple[str, ...], model) -> TaskFeeds:
    """Load task data with the model's label order, and encode calibration and metric batches."""
    task = task_of(model.config)
    if config.data.task_type != task.name:
        raise fail(f"the model is a {task.name} model but data.task_type={config.data.task_type}",
                   f"pass data.task_type={task.name} (data=ner selects the token_classification data settings)")
    data, note = load_labelled(config.data, labels)
    split = "dev" if "dev" in data.splits else "test" if "test" in data.splits else "train"
    names = model_input_names(model, tokenizer)
    data_config = dataclasses.replace(config.data, max_length=min(config.max_length, config.data.max_length))
    metric_data = first(data, split, config.metric_examples)
    collate = make_collate(tokenizer.pad_token_id or 0, task)
    rows = encode(metric_data, split, tokenizer, data_config)
    batches = tuple(metric_batch(collate(rows[i:i + EVAL_BATCH]), names) for i in range(0, len(rows), EVAL_BATCH))
    calibration_rows = encode(first(data, "train", config.calibration.samples), "train", tokenizer, data_config)
    return TaskFeeds(calibration=calibration_batches(tokenizer, calibration_rows[: config.calibration.samples], names),
                     metric_batches=batches, metric_rows=tuple(rows), task=task, label_names=labels, split=split,
                     examples=len(metric_data.splits[split]), label_note=note, data=data, data_config=data_config)


def first(data: TaskData, split: str, count: int | None) -> TaskData:
    """`data` with only the first `count` examples of `split` (all of them for None)."""
    if count is None:
        return data
    return dataclasses.replace(data, splits={**data.splits, split: data.splits[split][:count]})


def metric_batch(batch: dict[str, torch.Tensor], names) -> MetricBatch:
    return MetricBatch({name: batch[name].numpy().astype(np.int64) for name in names}, batch["labels"])


def calibration_batches(tokenizer, rows: list[Row], names) -> tuple[Feed, ...]:
    """Equal-shape batches: the histogram calibrators (entropy, percentile) stack every batch into one array."""
    longest = max(len(row["input_ids"]) for row in rows)
    size = min(CALIBRATION_BATCH, len(rows))
    return tuple(pad_rows(tokenizer, rows[i:i + size], names, width=longest) for i in range(0, len(rows) - size + 1, size))


def load_labelled(data: DataConfig, labels: tuple[str, ...]) -> tuple[TaskData, str]:
    """Map the data's labels onto the model's classes: by name, or by index when the data uses 0..n-1."""
    found = load_task(data).label_names
    if found is None:  # the task has no label names (regression targets)
        return load_task(data), f"{data.task_type} targets"
    if set(found) <= set(labels):
        return load_task(data, labels), "data labels matched to the model's label names"
    if all(name.isdigit() and int(name) < len(labels) for name in found):
        return load_task(data, tuple(str(i) for i in range(len(labels)))), \
            f"numeric data labels taken as class indices ({', '.join(f'{i}={n}' for i, n in enumerate(labels))})"
    raise fail(f"the data's labels {list(found)} match neither the model's labels {list(labels)} nor indices 0..{len(labels) - 1}",
               "use task data with the labels the model was trained on")
