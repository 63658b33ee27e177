"""Compare onnxruntime's logits with PyTorch's on real encoded rows (the task's, or demo text), padded, at several batch
sizes and lengths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alembert.demo import DemoConfig, generate as generate_demo
from alembert.decoding import joined
from alembert.tasks import task_of
from alembert.tasks.base import Task
from export.config import ParityConfig

Feed = dict[str, np.ndarray]


Row = dict[str, list[int]]  # one encoded input, unpadded: input_ids, attention_mask (token_type_ids), maybe labels


@dataclass(frozen=True)
class ParitySet:
    """Encoded batches and PyTorch's logits for each, computed once and reused for every variant; per batch, the
    output rows compared (the task's positions: every real token of a token task; None: every row)."""

    feeds: tuple[Feed, ...]
    reference: tuple[np.ndarray, ...]
    rows: tuple[np.ndarray | None, ...]

    @property
    def shapes(self) -> list[list[int]]:
        return [list(feed["input_ids"].shape) for feed in self.feeds]


def fallback_texts(count: int) -> list[str]:
    """Real sentences when no task data is given: the demo task's, plus a long one that hits truncation."""
    rows = generate_demo(DemoConfig(train_size=count, dev_size=1, test_size=1))["train"]
    texts = [row["sentence"] for row in rows]
    texts[0] = " ".join(texts[: min(len(texts), 40)])  # long enough to be cut at every max length
    return texts


def text_rows(tokenizer, texts: Sequence[str], max_length: int) -> list[Row]:
    """Texts tokenized one row each, truncated to `max_length`, unpadded."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [{key: encoded[key][i] for key in encoded.keys()} for i in range(len(texts))]


def pad_rows(tokenizer, rows: Sequence[Row], names: Sequence[str], width: int | None = None) -> Feed:
    """The model inputs of `rows` as one batch, padded by the tokenizer to the longest row, or to `width`."""
    padded = tokenizer.pad([{name: row[name] for name in names} for row in rows],
                           padding="max_length" if width else "longest", max_length=width, return_tensors="np")
    return {name: padded[name].astype(np.int64) for name in names}


def build_parity_set(model, tokenizer, names: Sequence[str], rows_at: Callable[[int], list[Row]], config: ParityConfig,
                     longest: int, task: Task, filler: Callable[[int], list[Row]] | None = None) -> ParitySet:
    """Cut rows (`rows_at(max_length)`: encoded at that length) into batches, each size at each max length up to
    `longest`, plus at each length one batch of the `filler` rows (a long text) beside the shortest row; run
    PyTorch once on them."""
    feeds = []
    for max_length in sorted({min(length, longest) for length in config.max_lengths}):
        rows = sorted(rows_at(max_length), key=lambda row: len(row["input_ids"]))  # short and long rows mixed: padding
        for batch_size in config.batch_sizes:
            step = max(1, len(rows) // batch_size)
            chosen = [rows[(i * step) % len(rows)] for i in range(batch_size - 1)] + [rows[-1]]
            feeds.append(pad_rows(tokenizer, chosen, names))
        if filler is not None:
            feeds.append(pad_rows(tokenizer, filler(max_length) + rows[:1], names))
    return ParitySet(feeds=tuple(feeds), reference=tuple(torch_logits(model, feed) for feed in feeds),
                     rows=tuple(compared_rows(task, feed) for feed in feeds))


def compared_rows(task: Task, feed: Feed) -> np.ndarray | None:
    """The output rows the task reads (its positions without labels), as a boolean mask; None: all of them."""
    positions = task.positions(None, torch.from_numpy(feed["attention_mask"]))
    return None if positions is None else positions.numpy().astype(bool)


@torch.no_grad()
def torch_logits(model, feed: Feed) -> np.ndarray:
    inputs = {name: torch.from_numpy(array) for name, array in feed.items()}
    return task_of(model.config).output_logits(model(**inputs)).float().numpy()


@dataclass(frozen=True)
class Comparison:
    max_abs_diff: float
    agreement: float  # share of compared rows (sequences, or tokens) whose predicted class matches PyTorch's


def compare(session, parity: ParitySet) -> Comparison:
    """Largest |onnx - torch| over the compared rows of every parity batch, for a session of export.backends, and
    argmax agreement on them; NaN or a wrong shape is infinitely far."""
    worst, same, total = 0.0, 0, 0
    for feed, reference, rows in zip(parity.feeds, parity.reference, parity.rows):
        output = joined(session.run(feed)).astype(np.float32)
        if output.shape != reference.shape or not np.all(np.isfinite(output)):
            return Comparison(float("inf"), 0.0)
        if rows is not None:
            output, reference = output[rows], reference[rows]
        worst = max(worst, float(np.max(np.abs(output - reference)))) if len(reference) else worst
        same += int(np.sum(output.argmax(-1) == reference.argmax(-1)))
        total += len(reference)
    return Comparison(worst, same / max(total, 1))
