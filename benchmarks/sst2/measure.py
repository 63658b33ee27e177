"""Export every student to ONNX and time every model, PyTorch and ONNX, in this one process.

Accuracy is deterministic and cached with the row; latency is always measured afresh, all rows
in one pass, so every speedup in the table is a ratio between figures from the same run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from compress.saving import load_compressed
from distill.errors import AlembertError, atomic_write_text
from distill.models import load_tokenizer
from export.bundle import MANIFEST, export_model
from export.config import ExportConfig, LatencyConfig
from export.measure import evaluate, ort_runner, ort_session, random_feed, time_runner, torch_runner

SEQ_LEN = 64
THROUGHPUT_BATCH = 32
ONNX_METRICS = "onnx_metrics.json"


@dataclass(frozen=True)
class Timing:
    runs: int
    throughput_runs: int
    threads: int


@dataclass(frozen=True)
class EvalSet:
    """The reporting split as the PyTorch evaluation saw it: the same batches, padded the same way."""

    feeds: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray


def eval_set(loader) -> EvalSet:
    names = ("input_ids", "attention_mask", "token_type_ids")
    feeds, labels = [], []
    for batch in loader:
        feeds.append({name: batch[name].numpy() for name in names if name in batch})
        labels.append(batch["labels"].numpy())
    return EvalSet(tuple(feeds), np.concatenate(labels))


def pytorch_entry(record: dict, timing: Timing) -> dict:
    model = load_compressed(record["model_dir"])
    names = ("input_ids", "attention_mask", "token_type_ids")
    return {**record, "runtime": "PyTorch fp32", **time_model(torch_runner(model), names, model.config.vocab_size, timing)}


def onnx_entries(record: dict, variants: tuple[str, ...], data: EvalSet, timing: Timing, row_dir: Path) -> list[dict]:
    """One entry per ONNX variant of a student: accuracy on the reporting split, size and timings."""
    try:
        bundle = export_bundle(record, variants, row_dir, timing.threads)
    except AlembertError as error:  # a failed export is a row of its own, not the end of the benchmark
        return [{**record, "runtime": "ONNX", "error": str(error)}]
    manifest = json.loads((bundle / MANIFEST).read_text())
    accuracy = onnx_accuracy(bundle, manifest, variants, data, timing.threads)
    entries = []
    for name in variants:
        variant = manifest["variants"][name]
        runner = ort_runner(ort_session(bundle / variant["file"], timing.threads))
        timings = time_model(runner, tuple(manifest["inputs"]), _vocab(record), timing)
        entries.append({**record, "runtime": f"ONNX {name}", "accuracy": accuracy[name], "size_mb": variant["size_mb"],
                        **timings})
    return entries


def export_bundle(record: dict, variants: tuple[str, ...], row_dir: Path, threads: int) -> Path:
    bundle = row_dir / "onnx"
    if (bundle / MANIFEST).is_file():
        return bundle
    model = load_compressed(record["model_dir"])
    config = ExportConfig(variants=variants, latency=LatencyConfig(runs=5, warmup=2, threads=threads))
    return export_model(model, load_tokenizer(record["model_dir"]), bundle, config, source=record["model_dir"])


def onnx_accuracy(bundle: Path, manifest: dict, variants: tuple[str, ...], data: EvalSet, threads: int) -> dict[str, float]:
    cache = bundle.parent / ONNX_METRICS
    if cache.is_file():
        return json.loads(cache.read_text())
    inputs = set(manifest["inputs"])
    feeds = [{name: array for name, array in feed.items() if name in inputs} for feed in data.feeds]
    accuracy = {}
    for name in variants:
        session = ort_session(bundle / manifest["variants"][name]["file"], threads)
        accuracy[name] = evaluate(ort_runner(session), feeds, data.labels)[1]["accuracy"]
    atomic_write_text(cache, json.dumps(accuracy, indent=2) + "\n")
    return accuracy


def time_model(runner, names: tuple[str, ...], vocab_size: int, timing: Timing) -> dict:
    """Batch-1 latency (p50, p90) and batch-32 throughput at sequence 64, on random tokens."""
    single = random_feed(names, 1, SEQ_LEN, int(vocab_size))
    batch = random_feed(names, THROUGHPUT_BATCH, SEQ_LEN, int(vocab_size))
    one = time_runner(runner, single, runs=timing.runs, warmup=5)
    many = time_runner(runner, batch, runs=timing.throughput_runs, warmup=1)
    return {"latency_ms": one.p50_ms, "latency_p90_ms": one.p90_ms, "throughput": many.throughput}


def _vocab(record: dict) -> int:
    return int(json.loads((Path(record["model_dir"]) / "config.json").read_text())["vocab_size"])


def measure_all(records: list[dict], variants: tuple[str, ...], data: EvalSet, timing: Timing, work: Path) -> list[dict]:
    """PyTorch for every row, ONNX variants for every student row; speedups against the teacher's PyTorch row."""
    torch.set_num_threads(timing.threads)
    entries = []
    for record in tqdm(records, desc="export and time", unit="row"):
        entries.append(pytorch_entry(record, timing))
        if record["kind"] != "teacher":
            entries.extend(onnx_entries(record, variants, data, timing, work / "rows" / record["id"]))
    teacher = entries[0]
    for entry in entries:
        if "latency_ms" in entry:
            entry["speedup"] = teacher["latency_ms"] / entry["latency_ms"]
            entry["pct_of_teacher"] = 100 * entry["accuracy"] / teacher["accuracy"]
    return entries

