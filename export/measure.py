"""Latency and task-metric measurements shared by the bundle manifest and `python -m export.bench`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alembert.decoding import joined
from alembert.tagging import IGNORED
from alembert.tasks import task_of
from alembert.tasks.base import Task

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p90_ms: float
    batch_size: int

    @property
    def throughput(self) -> float:
        """Examples per second at the median latency."""
        return self.batch_size / (self.p50_ms / 1000)


def random_feed(names: Sequence[str], batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> Feed:
    """Random token ids with a full attention mask: latency depends on shape, not on which tokens."""
    rng = np.random.default_rng(seed)
    feed = {"input_ids": rng.integers(5, vocab_size, (batch_size, seq_len), dtype=np.int64),
            "attention_mask": np.ones((batch_size, seq_len), dtype=np.int64),
            "token_type_ids": np.zeros((batch_size, seq_len), dtype=np.int64)}
    return {name: feed[name] for name in names}


def torch_runner(model: torch.nn.Module) -> Callable[[Feed], object]:
    model.eval()
    task = task_of(model.config)

    def run(feed: Feed) -> object:
        with torch.inference_mode():
            return task.output_logits(model(**{name: torch.from_numpy(array) for name, array in feed.items()}))

    return run


def time_runner(run: Callable[[Feed], object], feed: Feed, *, runs: int, warmup: int) -> Timing:
    for _ in range(warmup):
        run(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feed)
        times.append((time.perf_counter() - start) * 1000)
    quantiles = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return Timing(p50_ms=statistics.median(times), p90_ms=quantiles[8], batch_size=len(feed["input_ids"]))


def time_in_turns(runners: dict, feed: Feed, *, runs: int, warmup: int, rounds: int = 5) -> dict[str, Timing]:
    """Time several models fairly in one run: each in turn, for `rounds` rounds, a turn being a short
    warm-up and then runs/rounds timed calls back to back.

    Rounds spread a slow spell of the machine over all models alike. Calls are not interleaved one by one,
    because onnxruntime's threads keep spinning for a while after a call and would steal the cores from
    whichever model ran next.
    """
    samples = {name: [] for name in runners}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(warmup):
                run(feed)
            for _ in range(per_round):
                start = time.perf_counter()
                run(feed)
                samples[name].append((time.perf_counter() - start) * 1000)
    batch = len(feed["input_ids"])
    return {name: Timing(statistics.median(times), statistics.quantiles(times, n=10)[8] if len(times) > 1 else times[0], batch)
            for name, times in samples.items()}


def evaluate(run: Callable[[Feed], object], batches: Sequence, task: Task,
             label_names: tuple[str, ...] | None = None, rows: Sequence[dict] | None = None) -> tuple[str, dict[str, float]]:
    """`task`'s metrics of any runner (ORT or PyTorch) on pre-encoded batches (each with `.feed` and the task's
    collated `.labels`), and the name of its primary one. Batches of different widths are gathered by the task;
    `rows` are the encoded rows the batches came from (a span task's contexts and answers)."""
    outputs = [torch.from_numpy(np.asarray(_logits(run(batch.feed)), dtype=np.float32)) for batch in batches]
    labels = task.gather([batch.labels for batch in batches], IGNORED)
    return task.primary_metric, task.metrics(task.gather(outputs, 0.0), labels, label_names, rows=rows)


def _logits(output) -> np.ndarray:
    if isinstance(output, torch.Tensor):
        return output.float().numpy()
    return joined(output)
