"""What one trial measures: its `python -m distill` run, then the figures its objectives are read from.

Figures (all floats): the distilled student's summary row (`accuracy`, `agreement`, `latency_ms`, `size_mb`,
`params`, ... on the run's eval split); `dev_<metric>`, the dev metric of the model the trial ends with; with
compression passes, size, speed and eval metrics of the compressed model instead; with export on,
`onnx_latency_ms`, `onnx_size_mb` and `onnx_<metric>` of the chosen ONNX variant.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from compress.pipeline import MODEL_FOLDER, TABLE_NAME
from compress.saving import load_compressed
from alembert.config import from_dict
from alembert.evaluate import evaluate
from alembert.errors import fail
from pipeline.run import RunConfig, run, setup
from export.bundle import MANIFEST, build_bundle
from export.config import ExportConfig
from export.variants import BASE

STUDENT_ROW = "student (KD)"
ROW_FIGURES = ("accuracy", "f1", "mcc", "pearson", "spearman", "mse", "agreement", "kl_to_teacher", "mse_to_teacher",
               "params", "non_embedding_params", "size_mb", "latency_ms", "train_s")
COMPRESSED_FIGURES = ("params", "non_embedding_params", "nonzero_params", "size_mb", "gflops", "latency_ms")
TEACHER_FIGURES = ("agreement", "kl_to_teacher", "mse_to_teacher")  # of the student before compression: dropped after it
PRIMARY = ("accuracy", "pearson")
FIGURES = frozenset(ROW_FIGURES + COMPRESSED_FIGURES + tuple(f"dev_{m}" for m in PRIMARY))
ONNX_FIGURES = frozenset({"onnx_latency_ms", "onnx_size_mb", *(f"onnx_{m}" for m in PRIMARY)})


def check_objectives(metrics: tuple[str, ...], export_enabled: bool) -> None:
    known = FIGURES | (ONNX_FIGURES if export_enabled else frozenset())
    for metric in metrics:
        if metric in ONNX_FIGURES and not export_enabled:
            raise fail(f"objective {metric} needs the ONNX export of every trial", "set export.enabled=true in the sweep")
        if metric not in known:
            raise fail(f"objective metric '{metric}' is not a figure a trial measures", f"use one of {', '.join(sorted(known))}")


@dataclass
class DevTracker:
    """Follows the student's dev evaluations: keeps the best (the weights `fit` ends with) and passes each on."""

    forward: Callable[[int, dict[str, float]], None] | None = None
    best: dict[str, float] = field(default_factory=dict)

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        name = next(m for m in PRIMARY if m in metrics)
        if not self.best or metrics[name] > self.best[name]:
            self.best = dict(metrics)
        if self.forward is not None:
            self.forward(step, metrics)


@dataclass(frozen=True)
class ExportPlan:
    """Export the trial's model as `variant` and measure it; `settings` are further ExportConfig fields."""

    variant: str
    settings: dict = field(default_factory=dict)


def measure_trial(config: RunConfig, trial_dir: Path, *, report: Callable[[int, dict[str, float]], None] | None = None,
                  export: ExportPlan | None = None) -> dict[str, float]:
    """Run the trial and return its figures; `report(step, dev_metrics)` sees each dev evaluation (for pruning)."""
    tracker = DevTracker(report)
    rows = run(config, trial_dir, on_evaluate=tracker)
    row = next((r for r in rows if r.get("model") == STUDENT_ROW), None)
    if row is None:
        raise fail("the trial's run has no distilled student row", f"see the run's summary.md in {trial_dir}")
    figures = {key: float(row[key]) for key in ROW_FIGURES if isinstance(row.get(key), (int, float))}
    figures.update({f"dev_{key}": float(value) for key, value in tracker.best.items() if key in PRIMARY})
    if config.compress.passes:
        figures = {k: v for k, v in figures.items() if k not in TEACHER_FIGURES}
        figures.update(compressed_figures(config, trial_dir))
    if export is not None:
        figures.update(onnx_figures(config, final_model_dir(config, trial_dir), trial_dir / "onnx", export))
    return figures


def final_model_dir(config: RunConfig, trial_dir: Path) -> Path:
    """The model a trial ends with: the compressed one when passes ran, else the distilled student."""
    return trial_dir / "compressed" / MODEL_FOLDER if config.compress.passes else trial_dir / "student"


def compressed_figures(config: RunConfig, trial_dir: Path) -> dict[str, float]:
    """Size and speed from the compression report's last row; metrics of the compressed model on the eval split."""
    last = json.loads((trial_dir / "compressed" / f"{TABLE_NAME}.json").read_text())[-1]
    figures = {key: float(last[key]) for key in COMPRESSED_FIGURES if isinstance(last.get(key), (int, float))}
    if "metric" in last:
        figures[f"dev_{last['metric_name']}"] = float(last["metric"])
    model = load_compressed(final_model_dir(config, trial_dir))
    figures.update(evaluate(model, setup(config).loaders.eval))
    return figures


def onnx_figures(config: RunConfig, model_dir: Path, out: Path, plan: ExportPlan) -> dict[str, float]:
    """Export `model_dir` with only `plan.variant` besides fp32, and read that variant's figures from the manifest."""
    settings = {**plan.settings, "model": str(model_dir), "out": str(out),
                "variants": [] if plan.variant == BASE else [plan.variant]}
    export_config = replace(from_dict(ExportConfig, settings), data=config.data)  # the trial's data: calibration, metric
    entry = json.loads((build_bundle(export_config) / MANIFEST).read_text())["variants"][plan.variant]
    figures = {"onnx_latency_ms": float(entry["latency_ms"]), "onnx_size_mb": float(entry["size_mb"])}
    if "metric" in entry:
        figures[f"onnx_{entry['metric_name']}"] = float(entry["metric"])
    return figures
