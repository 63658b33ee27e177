"""How a bundle judges a graph: parity against PyTorch for every precision, and the task metric against fp32's for
reduced precisions (int8, and fp32 graphs that a runtime runs in bf16), on any runtime of export.backends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from alembert.errors import AlembertError
from alembert.tasks.base import Task
from export import parity as checks
from export.backends import BACKENDS, DEFAULT
from export.config import ExportConfig
from export.feeds import TaskFeeds
from export.measure import evaluate
from export.variants import Candidate

REDUCED = ("int8", "bf16")  # judged on the task metric: their logits may move further than fp16's


@dataclass(frozen=True)
class Judge:
    """Everything a candidate is checked against: PyTorch's logits, the tolerances and, with data, the fp32 metric."""

    parity: checks.ParitySet
    config: ExportConfig
    task: TaskFeeds | None
    model_task: Task  # the model's own task, which bounds int8 when the config leaves it to the task

    def tolerance(self, precision: str) -> float:
        tolerances = self.config.tolerances
        reduced = self.model_task.int8_logit_bound() if tolerances.int8_logits is None else tolerances.int8_logits
        return {"fp32": tolerances.fp32, "fp16": tolerances.fp16}.get(precision, reduced)


def check(precision: str, candidate: Candidate, judge: Judge, base_entry: dict | None, *, runtime: str = DEFAULT,
          hint: str | None = None) -> tuple[dict, str | None]:
    """The manifest entry of `candidate` run on `runtime` (with its precision `hint`), and why it fails, or None."""
    tolerance = judge.tolerance(precision)
    label = candidate.notes[0] if candidate.notes else candidate.path.name
    try:
        session = BACKENDS[runtime].open(candidate.path, None, hint, judge.config.provider)
    except Exception as err:  # each runtime raises its own types for an invalid graph: the candidate is rejected
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        return {}, f"{label}: {runtime} cannot load {candidate.path.name}: {detail}"
    try:
        comparison = checks.compare(session, judge.parity)
    except AlembertError as err:
        return {}, f"{label}: {err}"
    diff = comparison.max_abs_diff
    entry = {"file": candidate.path.name, "precision": precision, "size_mb": round(candidate.path.stat().st_size / 1e6, 3),
             "opset": opset_of(candidate.path), "max_abs_diff": diff, "tolerance": tolerance,
             "agreement": comparison.agreement, "providers": list(session.providers)}
    if not diff <= tolerance:
        return entry, f"max abs difference from PyTorch {diff:.3g} exceeds the {precision} tolerance {tolerance:g}"
    if judge.task is not None:
        entry["metric_name"], metrics = task_metric(session.run, judge.task)
        entry["metric"] = metrics[entry["metric_name"]]
        if base_entry is not None:
            entry["metric_drop"] = base_entry["metric"] - entry["metric"]
            allowed = int8_metric_drop(judge.config, judge.task.task)
            if precision in REDUCED and entry["metric_drop"] > allowed:
                return entry, (f"{entry['metric_name']} drops by {entry['metric_drop']:.4f} from fp32 "
                               f"(allowed {allowed:g})")
    return entry, None


def task_metric(runner, task: TaskFeeds) -> tuple[str, dict[str, float]]:
    """The task's metrics on the metric batches, classes named as the model names them."""
    return evaluate(runner, task.metric_batches, task.task, task.label_names, rows=task.metric_rows)


def int8_metric_drop(config: ExportConfig, task: Task) -> float:
    """The configured bound on the int8 (and bf16) metric drop, else the task's own."""
    configured = config.tolerances.int8_metric_drop
    return task.int8_metric_drop() if configured is None else configured


def opset_of(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
