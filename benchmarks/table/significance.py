"""Is a row better than its baseline, or is the gap noise? Both models answer the same test sentences, so
the comparison is paired: a bootstrap interval on the accuracy difference, and McNemar's exact test on the
sentences only one of the two gets right. With 872 sentences one sentence is 0.11 points, and single-seed
gaps under about 2 points are usually inside the interval."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from compress.saving import load_compressed
from alembert.evaluate import predict_logits
from alembert.errors import atomic_write_text

PREDICTIONS = "predictions.json"


@dataclass(frozen=True)
class PairedDifference:
    delta: float  # accuracy(a) - accuracy(b)
    low: float  # 95% paired-bootstrap interval of delta
    high: float
    p_value: float  # McNemar's exact two-sided test
    only_a: int  # sentences a gets right and b wrong
    only_b: int

    def summary(self) -> str:
        """e.g. '+1.5 [-0.2, +3.2]', in accuracy points."""
        return f"{100 * self.delta:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> PairedDifference:
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    per_example = correct_a.astype(float) - correct_b.astype(float)
    samples = np.random.default_rng(seed).integers(0, len(per_example), (resamples, len(per_example)))
    low, high = np.percentile(per_example[samples].mean(axis=1), [2.5, 97.5])
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return PairedDifference(float(per_example.mean()), float(low), float(high), float(p_value), only_a, only_b)


def correct_answers(record: dict, eval_loader, labels: np.ndarray) -> np.ndarray:
    """Which reporting-split examples the row's PyTorch model gets right; cached beside its record."""
    path = Path(record["row_dir"]) / PREDICTIONS
    if path.is_file():
        predictions = np.array(json.loads(path.read_text()))
    else:
        logits, _ = predict_logits(load_compressed(record["model_dir"]), eval_loader)
        predictions = logits.argmax(-1).numpy()
        atomic_write_text(path, json.dumps(predictions.tolist()) + "\n")
    return predictions == labels


def compare_to_baselines(records: list[dict], baselines: dict[str, str], eval_loader, labels: np.ndarray) -> None:
    """Add `vs_baseline` (points, with the 95% interval) and `p_value` to every row that names a baseline."""
    by_id = {record["id"]: record for record in records}
    for row_id, baseline in baselines.items():
        difference = paired_difference(correct_answers(by_id[row_id], eval_loader, labels),
                                       correct_answers(by_id[baseline], eval_loader, labels))
        p_value = f"{difference.p_value:.3f}" if difference.p_value >= 0.001 else "<0.001"
        by_id[row_id].update(vs_baseline=difference.summary(), p_value=p_value,
                             wins_losses=f"{difference.only_a}/{difference.only_b}")
