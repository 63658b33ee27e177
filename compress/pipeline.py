"""Run a list of passes, measuring after each one, with optional recovery distillation.

Recovery distils the compressed model against the model from before compression (the teacher),
through the Distiller the caller hands over (distill's engine and KD objective). It runs after any step marked `recover`, and, with
`recovery.at_end`, once more before the trailing precision passes (quantize_dynamic, cast), since an
int8 or half model cannot be trained.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from compress.saving import load_compressed, save_compressed
from compress.registry import apply, is_precision_pass, name_of, spec_of
from alembert.vocab import input_table, moved_loader, pruning_entry, remap_batch, tokenizer_for
from compress.report import COLUMNS, logits_on, measure, reference_inputs
from alembert.errors import atomic_dir, fail
from alembert.tasks import check_deployable, task_of
from alembert.tasks.base import Task
from alembert.report import save_table
from alembert.training import Distiller, KDConfig, TrainConfig

MODEL_FOLDER = "model"
TABLE_NAME = "compress_report"


@dataclass(frozen=True)
class RecoveryConfig:
    """Distillation from the uncompressed model: at the end of the pipeline and/or after marked steps."""

    at_end: bool = True
    kd: KDConfig = KDConfig(temperature=2.0, alpha=0.5)
    train: TrainConfig = TrainConfig(epochs=1, lr=5e-5)


@dataclass(frozen=True)
class Step:
    """One pass of the pipeline, and whether to run recovery distillation right after it."""

    config: object
    recover: bool = False


@dataclass(frozen=True)
class TaskLoaders:
    """Task data for the pipeline: train (Taylor importance, recovery) and dev (the metric)."""

    train: DataLoader | None = None
    dev: DataLoader | None = None
    task: Task | None = None  # what the model does (alembert.tasks); recovery distils its logits accordingly


def _as_steps(passes) -> list[Step]:
    return [p if isinstance(p, Step) else Step(p) for p in passes]


def _recovery_points(steps: list[Step], recovery: RecoveryConfig | None) -> set[int]:
    """Indices of steps after which to recover; the end-of-pipeline point sits before trailing precision passes."""
    points = {i for i, step in enumerate(steps) if step.recover}
    if recovery is not None and recovery.at_end and steps:
        last = len(steps)
        while last > 0 and is_precision_pass(steps[last - 1].config):
            last -= 1
        if last > 0:
            points.add(last - 1)
    return points


def _check_plan(steps: list[Step], points: set[int], recovery: RecoveryConfig | None, data: TaskLoaders | None) -> None:
    if points and (recovery is None or data is None or data.train is None):
        raise fail("recovery was asked for but there is no training data or recovery config",
                   "give data=... and recovery=..., or drop recover/recovery.at_end")
    seen_precision = False
    for index, step in enumerate(steps):
        seen_precision = seen_precision or is_precision_pass(step.config)
        if seen_precision and index in points:
            raise fail(f"recovery after step {index + 1} ({name_of(step.config)}) would train an int8 or half-precision model",
                       "put quantize_dynamic / cast after the steps that recover")


def recover(model: nn.Module, teacher: nn.Module, data: TaskLoaders, recovery: RecoveryConfig,
            distiller: Distiller) -> nn.Module:
    return distiller(model, teacher, data.train, data.dev, kd=recovery.kd, train_config=recovery.train,
                     task=data.task).eval()


def run_pipeline(model: nn.Module, tokenizer, passes, *, data: TaskLoaders | None = None,
                 recovery: RecoveryConfig | None = None, out_dir: str | Path | None = None,
                 seq_len: int = 64, distiller: Distiller | None = None) -> tuple[nn.Module, list[dict]]:
    """Apply `passes` (configs or Steps) in order; return the final model and one report row per step.

    Recovery needs `distiller` (distill.recovery.kd_recovery from the entry points).

    With `out_dir`, the final model goes to out_dir/model and the table to out_dir/compress_report.{md,json}.
    """
    check_deployable(task_of(model.config), "compression")
    steps = _as_steps(passes)
    points = _recovery_points(steps, recovery)
    _check_plan(steps, points, recovery, data)
    if points and distiller is None:
        raise TypeError("run_pipeline: recovery was asked for but no distiller was given")  # a caller's bug
    model = model.eval()
    teacher = copy.deepcopy(model) if points else None
    dev = data.dev if data is not None else None
    reference = next(iter(dev)) if dev is not None else reference_inputs(model, 16)
    row, logits = measure("input", model, seq_len=seq_len, dev=dev, reference=reference, previous_logits=None, previous_gflops=None)
    rows = [_announce(row)]
    for index, step in enumerate(steps):
        name = name_of(step.config)
        if teacher is not None and spec_of(step.config)[1].remaps_inputs:  # the recovery teacher reads the new ids too
            teacher = apply(teacher, step.config, batches=data.train, tokenizer=tokenizer).eval()
        model = apply(model, step.config, batches=data.train if data is not None else None, tokenizer=tokenizer).eval()
        moved, old_dev = None, dev
        if spec_of(step.config)[1].remaps_inputs:
            tokenizer, moved = tokenizer_for(model, tokenizer), input_table(model)
            data = moved_data(data, moved)
            dev, reference = (data.dev if data is not None else None), remap_batch(reference, moved)
        row, logits = measure(name, model, seq_len=seq_len, dev=dev, reference=reference, previous_logits=logits,
                              previous_gflops=rows[-1]["gflops"])
        if moved is not None:
            row.update(vocab_report(model, old_dev, moved))
        rows.append(_announce(row))
        if index in points:
            model = recover(model, teacher, data, recovery, distiller)
            row, logits = measure(f"{name} + recovery", model, seq_len=seq_len, dev=dev, reference=reference,
                                  previous_logits=logits, previous_gflops=rows[-1]["gflops"])
            rows.append(_announce(row))
    if out_dir is not None:
        _save(model, tokenizer, Path(out_dir), rows, reference, logits)
    return model, rows


def moved_data(data: TaskLoaders | None, table: torch.Tensor) -> TaskLoaders | None:
    """The same loaders (rows, order, batch size), their batches in the new token ids."""
    if data is None:
        return None
    def move(loader: DataLoader | None) -> DataLoader | None:
        return None if loader is None else moved_loader(loader, table)
    return dataclasses.replace(data, train=move(data.train), dev=move(data.dev))


def vocab_report(model: nn.Module, dev: DataLoader | None, table: torch.Tensor) -> dict:
    """Rows kept, and the share of the dev split's real tokens that became UNK (`dev` in the old ids)."""
    entry = pruning_entry(model)
    report = {"vocab_kept": len(entry["kept_ids"]), "vocab_before": entry["vocab_before"]}
    if dev is None or entry["unk_id"] is None:
        return report
    old_unk = entry["kept_ids"][entry["unk_id"]]
    became, total = 0, 0
    for batch in dev:
        ids = batch["input_ids"][batch["attention_mask"].bool()]
        became += int(((table[ids] == entry["unk_id"]) & (ids != old_unk)).sum())
        total += ids.numel()
    return {**report, "dev_unk_share": round(became / max(total, 1), 5)}


def _announce(row: dict) -> dict:
    """One line per row; the metric under its task's name (accuracy, f1 ...)."""
    names = {"metric": row.get("metric_name", "metric")}
    print(" | ".join(f"{names.get(key, key)}={row[key]}" for key in COLUMNS if key in row), flush=True)
    return row


def _save(model, tokenizer, out_dir: Path, rows: list[dict], reference, logits: torch.Tensor) -> None:
    """Save the model, check that it reloads with the same logits, and write the table beside it.

    The model is checked in a temporary directory and renamed to out_dir/model only once it passes, and the
    table is written after that: a run killed or failing at any point leaves no model directory that was not
    checked, and a report only beside the model it describes.
    """
    model_dir = out_dir / MODEL_FOLDER
    with atomic_dir(model_dir) as staging:
        save_compressed(model, tokenizer, staging)  # replaces the empty staging directory, itself atomically
        drift = float((logits_on(load_compressed(staging), reference) - logits).abs().max())
        if drift > 1e-4:
            raise fail(f"the saved model reloads with logits {drift:.2e} away from the compressed model; nothing was "
                       f"written to {model_dir}", "report this as a bug, with the pass list")
        for stale in (out_dir / f"{TABLE_NAME}.md", out_dir / f"{TABLE_NAME}.json"):
            stale.unlink(missing_ok=True)  # an earlier run's table must not end up beside this run's model
    columns = COLUMNS + ["metric_name", "linear_sparsity", "dtype"]
    table = save_table(rows, columns, out_dir, TABLE_NAME)
    print(f"\nCompressed model saved to {model_dir} (reload checked, max logit diff {drift:.1e})\n{table}")
