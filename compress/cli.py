"""`python -m compress` as plain functions over a typed config; compress/__main__.py only adds Hydra.

The YAML names passes in order (`passes: [prune_ffn, quantize_dynamic]`); each takes its settings
from `settings.<name>`, and an entry may also be a mapping `{name: prune_ffn, ratio: 0.5, recover: true}`
that overrides them for that step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.pipeline import RecoveryConfig, Step, TaskLoaders, run_pipeline
from compress.registry import config_from_name, pass_names
from alembert.data import DataConfig, encode, load_task, loader
from alembert.errors import fail
from alembert.training import Distiller
from alembert.modeldir import load_model_dir, load_tokenizer, resolve_source


@dataclass(frozen=True)
class CompressStage:
    """Compression as a stage of another run (e.g. after distillation): passes, their settings, recovery."""

    passes: tuple[Any, ...] = ()
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    recovery: RecoveryConfig = RecoveryConfig(at_end=False)
    seq_len: int = 64


def run_stage(model, tokenizer, stage: CompressStage, data: TaskLoaders | None, out_dir: str | Path, *,
              distiller: Distiller | None = None):
    """Run `stage` on an in-memory model; return (compressed model, report rows). Writes out_dir/model and the table.

    `distiller` runs recovery distillation (distill.recovery.kd_recovery, handed over by the entry points).
    """
    steps = build_steps(stage.passes, stage.settings)
    recovery = stage.recovery if (stage.recovery.at_end or any(s.recover for s in steps)) else None
    return run_pipeline(model, tokenizer, steps, data=data, recovery=recovery, out_dir=out_dir, seq_len=stage.seq_len,
                        distiller=distiller)


@dataclass(frozen=True)
class CompressConfig:
    """The whole `python -m compress` job. `data.task: null` runs without task data (no metric, Taylor or recovery)."""

    model: str | None = None
    out_dir: str | None = None
    passes: tuple[Any, ...] = ()
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: DataConfig = DataConfig(task=None)
    recovery: RecoveryConfig = RecoveryConfig(at_end=False)
    batch_size: int = 32
    seq_len: int = 64


def build_steps(passes: tuple[Any, ...], settings: dict[str, dict[str, Any]]) -> list[Step]:
    """Turn YAML pass entries (names, or mappings with `name`) into typed Steps."""
    if not passes:
        raise fail("no compression passes were given", f"set passes=[...] with names from: {', '.join(pass_names())}")
    unknown = sorted(set(settings) - set(pass_names()))
    if unknown:
        raise fail(f"settings for unknown pass(es) {', '.join(unknown)}", f"valid passes are: {', '.join(pass_names())}")
    steps = []
    for entry in passes:
        overrides = dict(entry) if isinstance(entry, dict) else {"name": entry}
        if "name" not in overrides:
            raise fail(f"pass entry {entry} has no name", "write {name: prune_ffn, ratio: 0.5} or just prune_ffn")
        name = str(overrides.pop("name"))
        recover = bool(overrides.pop("recover", False))
        merged = {**(settings.get(name) or {}), **overrides}
        steps.append(Step(config_from_name(name, merged), recover=recover))
    return steps


def task_loaders(data: DataConfig, tokenizer, model, batch_size: int) -> TaskLoaders | None:
    """Encode the task with the model's own label order, so labels match its trained head."""
    if data.task is None:
        return None
    names = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    trained = None if all(name.startswith("LABEL_") for name in names) else names
    task = load_task(data, label_names=trained)

    def build(split: str, shuffle: bool):
        if split not in task.splits:
            return None
        rows = encode(task, split, tokenizer, data)
        return loader(rows, tokenizer, batch_size=batch_size, task=task.task, shuffle=shuffle)

    return TaskLoaders(train=build("train", True), dev=build("dev", False), task=task.task)


def run(config: CompressConfig, out_dir: str | Path, *, distiller: Distiller | None = None) -> list[dict]:
    if config.model is None:
        raise fail("no model was given", "set model=/path/to/a/saved/model/directory")
    stage = CompressStage(config.passes, config.settings, config.recovery, config.seq_len)
    build_steps(stage.passes, stage.settings)  # bad pass names and settings fail before anything loads
    source = resolve_source(config.model)
    model, tokenizer = load_model_dir(source), load_tokenizer(source)
    data = task_loaders(config.data, tokenizer, model, config.batch_size)
    _, rows = run_stage(model, tokenizer, stage, data, config.out_dir or out_dir, distiller=distiller)
    return rows
