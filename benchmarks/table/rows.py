"""Train (or reload from the cache) every row of the benchmark: teacher, students, compressed students.

A row's artefacts live in <work>/rows/<id>-<key>/; its record.json is written last, so a row with a
record is finished and a rerun (of this benchmark or another that composes the same row) reuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmarks.table.config import Row
from benchmarks.table.significance import save_counts
from compress.cli import run_stage
from distill.recovery import kd_recovery
from compress.pipeline import MODEL_FOLDER, TaskLoaders
from compress.saving import load_compressed
from alembert.evaluate import predict_logits
from alembert.errors import atomic_write_text, fail
from alembert.modeldir import count_parameters, save_model
from alembert.report import size_on_disk_mb
from alembert.vocab import loader_for
from pipeline.run import Setup, distil, prepare_teacher, setup

RECORD = "record.json"


@dataclass
class Context:
    """What every row builder shares: the tokenised task, the fine-tuned teacher and the row cache."""

    prepared: Setup
    teacher: torch.nn.Module
    teacher_dir: str
    teacher_s: float
    dirs: dict[str, Path]  # row id -> <work>/rows/<id>-<key>

    def row_dir(self, row_id: str) -> Path:
        return self.dirs[row_id]


def prepare(rows: list[Row], work: Path) -> Context:
    """Load and tokenise the task, then fine-tune the teacher (or reuse the cached one)."""
    start = time.perf_counter()
    prepared = setup(rows[0].config)
    teacher, teacher_dir = prepare_teacher(prepared, rows[0].config)
    dirs = {row.spec.id: work / "rows" / row.folder for row in rows}
    return Context(prepared, teacher.eval(), teacher_dir, time.perf_counter() - start, dirs)


def build_teacher_row(row: Row, ctx: Context) -> tuple[torch.nn.Module, Path, float]:
    return ctx.teacher, Path(ctx.teacher_dir), ctx.teacher_s


def build_student_row(use_teacher: bool) -> Callable[[Row, Context], tuple[torch.nn.Module, Path, float]]:
    def build(row: Row, ctx: Context) -> tuple[torch.nn.Module, Path, float]:
        student, seconds = distil(ctx.prepared, ctx.teacher, row.config, use_teacher=use_teacher)
        return student.eval(), save_model(student, ctx.prepared.tokenizer, ctx.row_dir(row.spec.id) / "model"), seconds
    return build


def build_compressed_row(row: Row, ctx: Context) -> tuple[torch.nn.Module, Path, float]:
    """The parent row's model through the row's compression passes, with recovery distillation from the parent."""
    parent = load_compressed(read_record(ctx.row_dir(row.spec.parent))["model_dir"])
    loaders = ctx.prepared.loaders
    data = TaskLoaders(train=loaders.train, dev=loaders.dev, task=ctx.prepared.task.task)
    start = time.perf_counter()
    out = ctx.row_dir(row.spec.id) / "compress"
    model, _ = run_stage(parent, ctx.prepared.tokenizer, row.config.compress, data, out, distiller=kd_recovery)
    return model.eval(), out / MODEL_FOLDER, time.perf_counter() - start


BUILDERS = {
    "teacher": build_teacher_row,
    "baseline": build_student_row(use_teacher=False),
    "distil": build_student_row(use_teacher=True),
    "compress": build_compressed_row,
}


def read_record(row_dir: Path) -> dict:
    path = row_dir / RECORD
    if not path.is_file():
        raise fail(f"{row_dir} has no finished row", "run the benchmark again; unfinished rows are rebuilt")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise fail(f"{path} is corrupt", f"delete {row_dir} and run the benchmark again") from None


def build_rows(rows: list[Row], work: Path) -> tuple[list[dict], Context]:
    """Each row's record: the task's primary metric on the reporting split (under its own name: accuracy, f1, ...),
    agreement with the teacher, parameters, size and training time; its per-example counts go beside it for the
    paired comparisons. A reused row keeps its figures but takes this benchmark's label."""
    ctx = prepare(rows, work)
    teacher_logits, labels = predict_logits(ctx.teacher, ctx.prepared.loaders.eval)
    records = []
    for row in tqdm(rows, desc="benchmark rows", unit="row"):
        row_dir = ctx.row_dir(row.spec.id)
        if (row_dir / RECORD).is_file():
            tqdm.write(f"{row.spec.id}: reusing the finished row in {row_dir}")
            records.append(read_record(row_dir) | {"label": row.spec.label, "row_dir": str(row_dir)})
            continue
        model, model_dir, seconds = BUILDERS[row.spec.kind](row, ctx)
        record = describe(row, model, model_dir, seconds, teacher_logits, labels, ctx)
        atomic_write_text(row_dir / RECORD, json.dumps(record, indent=2) + "\n")
        records.append(record | {"row_dir": str(row_dir)})
    return records, ctx


def describe(row: Row, model, model_dir: Path, seconds: float, teacher_logits, labels, ctx: Context) -> dict:
    logits, _ = predict_logits(model, loader_for(model, ctx.prepared.loaders.eval))  # a pruned vocabulary: its ids
    total, non_embedding = count_parameters(model)
    task, label_names = ctx.prepared.task.task, ctx.prepared.task.label_names
    rows = ctx.prepared.loaders.eval.dataset
    metrics = task.metrics(logits, labels, label_names, rows=rows)
    save_counts(ctx.row_dir(row.spec.id), task, logits, labels, label_names, rows)
    return {"id": row.spec.id, "label": row.spec.label, "kind": row.spec.kind, "parent": row.spec.parent,
            "overrides": " ".join(row.overrides), "model_dir": str(model_dir), task.primary_metric: metrics[task.primary_metric],
            "metrics": metrics, "agreement": task.agreement(logits, teacher_logits, labels)["agreement"],
            "params": total, "non_embedding_params": non_embedding, "size_mb": size_on_disk_mb(model_dir),
            "transfer_set": transfer_size(row, ctx.prepared.loaders), "train_s": round(seconds, 1),
            "eval_split": ctx.prepared.loaders.eval_split,
            "eval_examples": int(len(labels))}


def transfer_size(row: Row, loaders) -> int:
    """How many examples the row trained on: a distilled student reads the transfer set (the unlabelled or augmented
    one where there is one); the teacher, the no-KD baseline and a compressed row's recovery read the training set."""
    distilled = row.spec.kind == "distil" and loaders.transfer is not None
    return len((loaders.transfer if distilled else loaders.train).dataset)
