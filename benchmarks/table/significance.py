"""Is a row better than its baseline, or is the gap noise? Both models answer the same test examples, so the
comparison is paired. The task gives every example a row of counts whose sums make its metric (accuracy: correct
and 1; entity F1: true-positive, predicted and gold entities), so the bootstrap resamples examples and recomputes
the metric from the resampled sums: entity F1 is not a mean of per-sentence scores. A sign test runs on the
examples where one model's own score beats the other's; for accuracy those are the sentences only one of the two
gets right, and the test is McNemar's exact test. With 872 sentences one sentence is 0.11 points, and single-seed
gaps under about 2 points are usually inside the interval."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from compress.saving import load_compressed
from alembert.errors import atomic_write_text, fail
from alembert.evaluate import predict_logits
from alembert.vocab import loader_for

COUNTS = "example_counts.json"  # beside a row's record: its per-example counts on the reporting split
CHUNK = 100  # resamples summed at a time: [CHUNK, examples, k] stays small

Score = Callable[[np.ndarray], np.ndarray]  # summed counts [..., k] -> the metric [...]


def accuracy(summed: np.ndarray) -> np.ndarray:
    """The metric of [correct, 1] counts, which a plain list of per-example correctness becomes."""
    return summed[..., 0] / np.maximum(summed[..., 1], 1)


@dataclass(frozen=True)
class PairedDifference:
    delta: float  # metric(a) - metric(b)
    low: float  # 95% paired-bootstrap interval of delta
    high: float
    p_value: float  # exact two-sided sign test on the examples one model scores higher (McNemar's for accuracy)
    only_a: int  # examples a scores higher than b (for accuracy: a right, b wrong)
    only_b: int

    def summary(self) -> str:
        """e.g. '+1.5 [-0.2, +3.2]', in points of the metric (accuracy or F1 times 100)."""
        return f"{100 * self.delta:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"

    def p_text(self) -> str:
        """The p-value to three decimals, or "<0.001"."""
        return f"{self.p_value:.3f}" if self.p_value >= 0.001 else "<0.001"


def paired_difference(counts_a, counts_b, score: Score = accuracy, *, resamples: int = 2000, seed: int = 0) -> PairedDifference:
    """`counts_*`: per-example counts [examples, k] whose sums `score` turns into the metric, or per-example
    correctness [examples] (then the metric is accuracy)."""
    counts_a, counts_b = _as_counts(counts_a), _as_counts(counts_b)
    if counts_a.shape != counts_b.shape:
        raise fail(f"the two rows were scored on different examples ({counts_a.shape} and {counts_b.shape} counts)",
                   "delete the rows' example_counts.json files and run the benchmark again")
    samples = np.random.default_rng(seed).integers(0, len(counts_a), (resamples, len(counts_a)))
    deltas = np.concatenate([score(counts_a[chunk].sum(axis=1)) - score(counts_b[chunk].sum(axis=1))
                             for chunk in np.array_split(samples, max(1, resamples // CHUNK))])
    low, high = np.percentile(deltas, [2.5, 97.5])
    own_a, own_b = score(counts_a), score(counts_b)  # each example scored alone
    only_a, only_b = int((own_a > own_b).sum()), int((own_b > own_a).sum())
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    delta = float(score(counts_a.sum(axis=0)) - score(counts_b.sum(axis=0)))
    return PairedDifference(delta, float(low), float(high), float(p_value), only_a, only_b)


def _as_counts(values) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 1:  # per-example correctness
        return np.stack([values.astype(np.int64), np.ones(len(values), dtype=np.int64)], axis=-1)
    return values


def save_counts(row_dir: Path, task, logits, labels, label_names, rows) -> None:
    """The row's per-example counts, written beside its record; a task without them (regression) writes none."""
    try:
        counts = task.example_counts(logits, labels, label_names, rows=rows)
    except NotImplementedError:
        return
    atomic_write_text(row_dir / COUNTS, json.dumps({"task": task.name, "counts": counts.tolist()}) + "\n")


def example_counts(record: dict, data, eval_loader) -> np.ndarray:
    """The row's per-example counts on the reporting split (`data`, an EvalSet of `eval_loader`): from beside its
    record, or from its PyTorch model when an older row lacks them."""
    path = Path(record["row_dir"]) / COUNTS
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("task") == data.task.name:
            return np.asarray(saved["counts"], dtype=np.float64)
    model = load_compressed(record["model_dir"])
    logits, _ = predict_logits(model, loader_for(model, eval_loader))
    try:
        counts = data.task.example_counts(logits, data.labels, data.label_names, rows=data.rows)
    except NotImplementedError as error:
        raise fail(f"row {record['id']} names a baseline, but {error}", "drop baseline: from the benchmark's rows") from None
    atomic_write_text(path, json.dumps({"task": data.task.name, "counts": counts.tolist()}) + "\n")
    return counts


def compare_to_baselines(records: list[dict], baselines: dict[str, str], data, eval_loader) -> None:
    """Add `vs_baseline` (points, with the 95% interval), `p_value` and `wins_losses` to every row that names a baseline."""
    by_id = {record["id"]: record for record in records}
    for row_id, baseline in baselines.items():
        difference = paired_difference(example_counts(by_id[row_id], data, eval_loader),
                                       example_counts(by_id[baseline], data, eval_loader), data.task.score_counts)
        by_id[row_id].update(vs_baseline=difference.summary(), p_value=difference.p_text(),
                             wins_losses=f"{difference.only_a}/{difference.only_b}")
