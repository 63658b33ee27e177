"""Export every student to ONNX and time every model, PyTorch and ONNX, in this one process.

The task's metric (accuracy, entity F1, ...) is deterministic and cached with the row; latency is always
measured afresh, all rows in one pass, so every speedup in the table is a ratio between figures from the same run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from compress.saving import load_compressed
from alembert.errors import AlembertError, atomic_write_text
from alembert.modeldir import load_tokenizer
from alembert.tagging import IGNORED
from alembert.tasks.base import Task
from alembert.vocab import history_table
from export.bundle import MANIFEST, export_model
from export.config import ExportConfig, LatencyConfig
from export.feeds import MetricBatch
from export.backends import open_session
from export.measure import evaluate, random_feed, time_in_turns, torch_runner

ONNX_METRICS = "onnx_metrics.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PYTORCH_ONLY = ("agreement", "vs_baseline", "p_value", "wins_losses")  # measured on the PyTorch model, not its ONNX


@dataclass(frozen=True)
class Settings:
    runs: int
    throughput_runs: int
    threads: int
    seq_len: int = 64
    throughput_batch: int = 32


@dataclass(frozen=True)
class EvalSet:
    """The reporting split as the PyTorch evaluation saw it: the same batches, padded the same way, each with the
    task's collated labels; `labels` gathers them as the task does (token rows padded to one width)."""

    batches: tuple[MetricBatch, ...]
    task: Task
    label_names: tuple[str, ...] | None
    rows: tuple[dict, ...]  # the encoded rows the batches were collated from

    @property
    def metric(self) -> str:
        return self.task.primary_metric

    @cached_property
    def labels(self) -> torch.Tensor:
        return self.task.gather([batch.labels for batch in self.batches], IGNORED)

    def metrics(self, run, inputs: set[str], ids: np.ndarray | None = None) -> dict[str, float]:
        """The task's metrics of a runner that takes only `inputs`; `ids` maps the original token ids to a pruned
        vocabulary's (alembert.vocab.history_table)."""
        def feed(batch: MetricBatch) -> dict:
            kept = {name: array for name, array in batch.feed.items() if name in inputs}
            return kept if ids is None else {**kept, "input_ids": ids[kept["input_ids"]]}
        batches = [MetricBatch(feed(batch), batch.labels) for batch in self.batches]
        return evaluate(run, batches, self.task, self.label_names, rows=self.rows)[1]


def eval_set(loader, task: Task, label_names: tuple[str, ...] | None) -> EvalSet:
    # in the rows' order (not the loader's shortest-first), so per-example counts pair with alembert.evaluate's
    in_order = DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn)
    batches = tuple(MetricBatch({name: batch[name].numpy() for name in INPUTS if name in batch}, batch["labels"])
                    for batch in in_order)
    return EvalSet(batches, task, label_names, tuple(loader.dataset))


def pytorch_entry(record: dict) -> tuple[dict, object]:
    model = load_compressed(record["model_dir"])
    return {**record, "runtime": "PyTorch fp32"}, feeding(torch_runner(model), INPUTS)


def onnx_entries(record: dict, variants: tuple[str, ...], data: EvalSet, threads: int, row_dir: Path) -> list[tuple[dict, object]]:
    """One entry (and its runner) per ONNX variant of a student, with the task's metric on the reporting split and size."""
    try:
        bundle = export_bundle(record, variants, row_dir, threads)
    except AlembertError as error:  # a failed export is a row of its own, not the end of the benchmark
        return [({**record, "runtime": "ONNX", "error": str(error)}, None)]
    manifest = json.loads((bundle / MANIFEST).read_text())
    metrics = onnx_metrics(record, bundle, manifest, variants, data, threads)
    entries = []
    for name in variants:
        variant = manifest["variants"][name]
        runner = open_session(bundle / variant["file"], threads=threads).run  # takes the inputs its graph has
        pytorch_only = {key: value for key, value in record.items() if key not in PYTORCH_ONLY}
        entries.append(({**pytorch_only, "runtime": f"ONNX {name}", "metrics": metrics[name],
                         data.metric: metrics[name][data.metric], "size_mb": variant["size_mb"]}, runner))
    return entries


def feeding(runner, names: tuple[str, ...]):
    """A runner that takes the full random feed and passes on only the inputs its model has."""
    return lambda feed: runner({name: feed[name] for name in names})


def export_bundle(record: dict, variants: tuple[str, ...], row_dir: Path, threads: int) -> Path:
    bundle = row_dir / "onnx"
    if (bundle / MANIFEST).is_file():
        return bundle
    model = load_compressed(record["model_dir"])
    config = ExportConfig(variants=variants, latency=LatencyConfig(runs=5, warmup=2, threads=threads))
    return export_model(model, load_tokenizer(record["model_dir"]), bundle, config, source=record["model_dir"])


def onnx_metrics(record: dict, bundle: Path, manifest: dict, variants: tuple[str, ...], data: EvalSet,
                 threads: int) -> dict[str, dict]:
    """Each variant's metrics on the reporting split, in the PyTorch evaluation's batches; cached beside the bundle
    (a cache from before all metrics were kept holds the primary one alone)."""
    cache = bundle.parent / ONNX_METRICS
    if cache.is_file():
        saved = json.loads(cache.read_text())
        return {name: value if isinstance(value, dict) else {data.metric: value} for name, value in saved.items()}
    table = history_table(_config(record).get("alembert_compression"))  # the graph reads a pruned vocabulary's ids
    metrics = {}
    for name in variants:
        run = open_session(bundle / manifest["variants"][name]["file"], threads=threads).run
        metrics[name] = data.metrics(run, set(manifest["inputs"]), None if table is None else table.numpy())
    atomic_write_text(cache, json.dumps(metrics, indent=2) + "\n")
    return metrics


def measure_all(records: list[dict], variants: tuple[str, ...], data: EvalSet, timing: Settings) -> list[dict]:
    """PyTorch for every row, ONNX variants for every student row, all timed in turns in this process;
    speedups and the share of the teacher's metric are against the teacher's PyTorch row."""
    torch.set_num_threads(timing.threads)
    pairs = []
    for record in tqdm(records, desc="load and export", unit="row"):
        pairs.append(pytorch_entry(record))
        if record["kind"] != "teacher":
            pairs.extend(onnx_entries(record, variants, data, timing.threads, Path(record["row_dir"])))
    timed = [(entry, runner) for entry, runner in pairs if runner is not None]
    vocab = min(_vocab(entry) for entry, _ in timed)
    runners = {index: runner for index, (_, runner) in enumerate(timed)}
    single = time_in_turns(runners, random_feed(INPUTS, 1, timing.seq_len, vocab), runs=timing.runs, warmup=3)
    many = time_in_turns(runners, random_feed(INPUTS, timing.throughput_batch, timing.seq_len, vocab),
                         runs=timing.throughput_runs, warmup=1)
    for index, (entry, _) in enumerate(timed):
        entry.update(latency_ms=single[index].p50_ms, latency_p90_ms=single[index].p90_ms, throughput=many[index].throughput)
    entries = [entry for entry, _ in pairs]
    teacher = entries[0]
    for entry in entries:
        if "latency_ms" in entry:
            entry["speedup"] = teacher["latency_ms"] / entry["latency_ms"]
            entry["pct_of_teacher"] = 100 * entry[data.metric] / teacher[data.metric] if teacher[data.metric] else float("nan")
    return entries


def _vocab(record: dict) -> int:
    return int(_config(record)["vocab_size"])


def _config(record: dict) -> dict:
    return json.loads((Path(record["model_dir"]) / "config.json").read_text())
