"""Compare onnxruntime's logits with PyTorch's on real tokenized text, padded, at several batch sizes and lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from alembert.demo import DemoConfig, generate as generate_demo
from alembert.errors import fail
from export.config import ParityConfig

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class ParitySet:
    """Encoded batches and PyTorch's logits for each, computed once and reused for every variant."""

    feeds: tuple[Feed, ...]
    reference: tuple[np.ndarray, ...]

    @property
    def shapes(self) -> list[list[int]]:
        return [list(feed["input_ids"].shape) for feed in self.feeds]


def fallback_texts(count: int) -> list[str]:
    """Real sentences when no task data is given: the demo task's, plus a long one that hits truncation."""
    rows = generate_demo(DemoConfig(train_size=count, dev_size=1, test_size=1))["train"]
    texts = [row["sentence"] for row in rows]
    texts[0] = " ".join(texts[: min(len(texts), 40)])  # long enough to be cut at every max length
    return texts


def encode_feeds(tokenizer, texts: Sequence[str], names: Sequence[str], max_length: int, *, fixed: bool = False) -> Feed:
    """Encode a batch padded to its longest row, or to exactly `max_length` when `fixed`."""
    encoded = tokenizer(list(texts), padding="max_length" if fixed else True, truncation=True, max_length=max_length,
                        return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in names}


def build_parity_set(model, tokenizer, names: Sequence[str], texts: Sequence[str], config: ParityConfig,
                     longest: int) -> ParitySet:
    """Cut texts into batches (each size at each max length up to `longest`), and run PyTorch once on them."""
    texts = sorted(texts, key=len)  # mixing short and long rows in a batch guarantees padding
    feeds = []
    for max_length in sorted({min(length, longest) for length in config.max_lengths}):
        for batch_size in config.batch_sizes:
            step = max(1, len(texts) // batch_size)
            chosen = [texts[(i * step) % len(texts)] for i in range(batch_size - 1)] + [texts[-1]]
            feeds.append(encode_feeds(tokenizer, chosen, names, max_length))
    return ParitySet(feeds=tuple(feeds), reference=tuple(torch_logits(model, feed) for feed in feeds))


@torch.no_grad()
def torch_logits(model, feed: Feed) -> np.ndarray:
    inputs = {name: torch.from_numpy(array) for name, array in feed.items()}
    return model(**inputs).logits.float().numpy()


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # onnxruntime's own warnings (e.g. unused initializers) are not the user's concern
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise fail(f"onnxruntime cannot load {path.name}: {str(err).splitlines()[0][:300]}",
                   "the graph is invalid; set ALEMBERT_DEBUG=1 and report the model family and pass") from err


@dataclass(frozen=True)
class Comparison:
    max_abs_diff: float
    agreement: float  # share of rows whose predicted class matches PyTorch's


def compare(path: Path, parity: ParitySet) -> Comparison:
    """Largest |onnx - torch| over every parity batch, and argmax agreement; NaN or a wrong shape is infinitely far."""
    runner = session(path)
    worst, same, total = 0.0, 0, 0
    for feed, reference in zip(parity.feeds, parity.reference):
        output = runner.run(None, feed)[0].astype(np.float32)
        if output.shape != reference.shape or not np.all(np.isfinite(output)):
            return Comparison(float("inf"), 0.0)
        worst = max(worst, float(np.max(np.abs(output - reference))))
        same += int(np.sum(output.argmax(-1) == reference.argmax(-1)))
        total += len(reference)
    return Comparison(worst, same / total)
