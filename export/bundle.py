"""Build a deployable bundle: the checked fp32 export, its checked variants, tokenizer, labels and manifest.json.

Everything is written into a temporary directory that is renamed to the output only when every
requested variant has passed its check, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from alembert import hardware
from alembert.data import DataConfig
from alembert.families import entry, family, history, prunable_families
from alembert.tasks.base import Task
from alembert.tasks import check_deployable, task_of
from alembert.compact import compact_for_export
from alembert.decoding import DECODERS
from alembert.errors import AlembertError, atomic_dir, fail
from alembert.modeldir import LABEL_FILE, load_model_dir, load_tokenizer, resolve_source
from export import parity as checks
from export.config import ExportConfig, int8_reduce_range
from export.feeds import TaskFeeds, load_task_feeds
from export.judge import Judge, check, int8_metric_drop, task_metric
from export.other_runtimes import fastest, fastest_overall, runtime_table
from export.backends import open_session
from export.measure import random_feed, time_runner, torch_runner
from export.onnx import EXPORTER, OUTPUT_NAME, attention_shapes, export_onnx, supported_length
from export.variants import BASE, BASE_FILE, BuildContext, Candidate, resolve

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
TORCH_INT8_WEIGHTS = "model_int8.safetensors"  # compress.saving.INT8_WEIGHTS; export does not import compress


def default_out(model_dir: str | Path) -> Path:
    """`<model>-onnx` beside the model directory, so the bundle never lands inside the model it came from."""
    model_dir = Path(model_dir).expanduser().resolve()
    return model_dir.parent / f"{model_dir.name}-onnx"


def build_bundle(config: ExportConfig) -> Path:
    """`python -m export`: load a saved model directory and export it."""
    if not config.model:
        raise fail("no model given", "run python -m export model=/path/to/saved/model")
    resolve(config.variants)  # an unknown variant name fails before the model is loaded
    model_dir = Path(config.model).expanduser()
    if not model_dir.is_dir():
        raise fail(f"model directory {model_dir} does not exist", "pass a directory saved by python -m distill, "
                   "python -m compress or save_pretrained")
    if (model_dir / TORCH_INT8_WEIGHTS).is_file():
        raise fail(f"{model_dir} holds a PyTorch dynamic-int8 model ({TORCH_INT8_WEIGHTS} from python -m compress), "
                   "whose packed int8 layers the ONNX exporter cannot trace",
                   "export the float model saved before the quantize_dynamic pass; the bundle's int8_dynamic and "
                   "int8_static variants quantize it for onnxruntime")
    source = resolve_source(str(model_dir))
    model, tokenizer = load_model_dir(source), load_tokenizer(source)
    out = Path(config.out).expanduser() if config.out else default_out(model_dir)
    return export_model(model, tokenizer, out, config, source=str(model_dir.resolve()))


def export_model(model, tokenizer, out: Path, config: ExportConfig, *, source: str = "in-memory model") -> Path:
    """Export an in-memory model of any task (a classifier, regressor or token tagger; any pass result) with its
    tokenizer into the bundle `out`."""
    check_deployable(task_of(model.config), "the export")
    variants = resolve(config.variants)
    model = compacted(model)
    config = dataclasses.replace(config, max_length=supported_length(model, tokenizer, config.max_length))
    torch.set_num_threads(config.latency.threads)
    model.eval()
    labels = label_names(model)
    task = load_task_feeds(config, tokenizer, labels, model) if config.data is not None else None
    with atomic_dir(out) as work:
        names = export_onnx(model, tokenizer, work / BASE_FILE, opset=config.opset)
        judge = Judge(parity_set(model, tokenizer, names, config, task), config, task, task_of(model.config))
        entries = {BASE: accept(BASE, "fp32", iter([Candidate(work / BASE_FILE, (EXPORTER,))]), judge, None)}
        heads, hidden = attention_shapes(model)
        family_entry = entry(model)
        accepted = {BASE: work / BASE_FILE}
        for variant in tqdm(variants, desc="export variants", unit="variant"):
            if variant.needs_data and task is None:
                entries[variant.name] = {"skipped": "needs task data for calibration: pass data.task=demo, or data.task=files data.train=... data.dev=..."}
                continue
            ctx = BuildContext(work, dict(accepted), heads, hidden, config, task.calibration if task else (),
                               family_entry.ort_model_type, family_entry.model_type)
            candidates = variant.build(ctx, work / variant.filename)
            entries[variant.name] = accept(variant.name, variant.precision, candidates, judge, entries[BASE])
            accepted[variant.name] = work / variant.filename
        add_latency(entries, accepted, model, names, config)
        runtimes = runtime_table(accepted, entries, judge, latency_feed(model, names, config), config)
        write_extras(work, model, tokenizer, source)
        manifest = build_manifest(entries, names, model, config, judge, source, runtimes)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def parity_set(model, tokenizer, names: tuple[str, ...], config: ExportConfig, task: TaskFeeds | None) -> checks.ParitySet:
    """PyTorch's logits on the task's own encoded rows (pairs as pairs, token tasks word-aligned) when data is
    given, else on demo sentences; either way with a long text that fills every max length."""
    texts = checks.fallback_texts(config.parity.samples)  # texts[0] is the long one
    model_task = task_of(model.config)
    if task is None:
        return checks.build_parity_set(model, tokenizer, names, lambda length: checks.text_rows(tokenizer, texts, length),
                                       config.parity, config.max_length, model_task)
    return checks.build_parity_set(model, tokenizer, names,
                                   lambda length: task.parity_rows(tokenizer, length, config.parity.samples),
                                   config.parity, config.max_length, model_task,
                                   filler=lambda length: checks.text_rows(tokenizer, texts[:1], length))


def compacted(model):
    """A head-pruned model keeps its pruned heads as zeros (stock configs cannot describe fewer heads), and
    global FFN pruning zero-pads uneven layers; both cost time in the graph. Remove them before export:
    the logits are the same, and the parity check compares the graph with the compacted model."""
    zeroed = any(entry.get("leaves_zeroed") for entry in history(model))  # documented in alembert.families
    if not zeroed or family(model) not in prunable_families():  # e.g. pruned, then shared as ALBERT
        return model
    return compact_for_export(copy.deepcopy(model))


def accept(name: str, precision: str, candidates, judge: Judge, base_entry: dict | None) -> dict:
    """Check candidates in order and return the manifest entry of the first that passes; fail if none does."""
    rejected = []
    for candidate in guarded(name, candidates):
        entry, problem = check(precision, candidate, judge, base_entry)
        if problem is None:
            entry["notes"] = list(candidate.notes) + [f"rejected first: {r}" for r in rejected]
            return entry
        rejected.append(problem)
    raise fail(f"export variant '{name}' failed its check: {'; then '.join(rejected) or 'no graph was produced'}",
               "nothing was written; drop the variant (variants=[...]) or loosen tolerances.* if the difference is acceptable")


def guarded(name: str, candidates: Iterator[Candidate]) -> Iterator[Candidate]:
    """Pass candidates through; a builder crash (onnxruntime's tools raise many types) becomes one line naming the variant."""
    try:
        yield from candidates
    except AlembertError:
        raise
    except Exception as err:
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise fail(f"building export variant '{name}' failed: {type(err).__name__}: {detail}",
                   f"leave '{name}' out of variants=[...] for this model; set ALEMBERT_DEBUG=1 for the traceback") from err


def label_names(model) -> tuple[str, ...]:
    id2label = model.config.id2label or {}
    return tuple(str(id2label[i]) for i in sorted(id2label, key=int))


def add_latency(entries: dict, accepted: dict[str, Path], model, names: tuple[str, ...], config: ExportConfig) -> None:
    """One latency figure per variant and for PyTorch, at the configured shape, measured in this run."""
    settings = config.latency
    feed = latency_feed(model, names, config)
    pytorch = time_runner(torch_runner(model), feed, runs=settings.runs, warmup=settings.warmup).p50_ms
    for name, path in tqdm(accepted.items(), desc="latency", unit="variant"):
        runner = open_session(path, threads=settings.threads, provider=config.provider).run
        entries[name]["latency_ms"] = time_runner(runner, feed, runs=settings.runs, warmup=settings.warmup).p50_ms
        entries[name]["speedup_vs_pytorch"] = pytorch / entries[name]["latency_ms"]
    entries["pytorch"] = {"latency_ms": pytorch}


def latency_feed(model, names: tuple[str, ...], config: ExportConfig) -> dict:
    return random_feed(names, config.latency.batch_size, config.latency.seq_len, int(model.config.vocab_size))


def write_extras(work: Path, model, tokenizer, source: str) -> None:
    """Tokenizer files and the label map; the torch-free runtime needs tokenizer.json (a fast tokenizer)."""
    tokenizer.save_pretrained(work)
    if not (work / "tokenizer.json").is_file():
        raise fail(f"the tokenizer of {source} has no tokenizer.json (it is not a fast tokenizer)",
                   "the torch-free runtime needs one: load it with AutoTokenizer(use_fast=True) and re-save the model")
    original = Path(source) / LABEL_FILE
    if original.is_file():
        shutil.copyfile(original, work / LABEL_FILE)
    else:
        label_map = {"id2label": {str(k): v for k, v in model.config.id2label.items()},
                     "problem_type": model.config.problem_type}
        (work / LABEL_FILE).write_text(json.dumps(label_map, indent=2) + "\n")


def build_manifest(entries: dict, names: tuple[str, ...], model, config: ExportConfig, judge: Judge, source: str,
                   runtimes: dict) -> dict:
    pytorch = entries.pop("pytorch")
    task = judge.task
    if task is not None:
        pytorch["metric_name"], metrics = task_metric(torch_runner(model), task)
        pytorch["metric"] = metrics[pytorch["metric_name"]]
    accepted = [name for name, entry in entries.items() if "skipped" not in entry]
    return {
        "format": FORMAT_VERSION,
        "source_model": source,
        "model_type": model.config.model_type,
        "exporter": EXPORTER,
        "opset": config.opset,
        "inputs": list(names),
        "output": OUTPUT_NAME,  # format 2's single output; "outputs" names them all (start_logits, end_logits)
        "outputs": list(task_of(model.config).onnx_outputs()),
        "labels": list(label_names(model)),
        "task": task_of(model.config).name,
        "problem_type": task_of(model.config).problem_type,
        "decoder": task_of(model.config).decoder,  # export.runtime decodes outputs with alembert.decoding's entry
        "max_length": config.max_length,
        **task_of(model.config).manifest_fields(config.data or DataConfig()),  # e.g. a span task's doc_stride and max_answer_length
        "truncation": truncation_note(model, config.max_length),
        "default_variant": "optimized" if "optimized" in accepted else BASE,
        "parity": {"batch_shapes": judge.parity.shapes, "tolerances": tolerances_of(config, task_of(model.config)),
                   "provider": config.provider},  # each variant's `providers`: what its check ran on, after any fallback
        "data": None if task is None else {"metric_split": task.split, "metric_examples": task.examples,
                                            "labels": task.label_note},
        "latency_shape": {"batch_size": config.latency.batch_size, "seq_len": config.latency.seq_len,
                          "threads": config.latency.threads},
        "machine": hardware.cpu().record(),  # what built and timed it: latency and the fastest variant depend on it
        "fastest_variant": fastest(entries),  # on onnxruntime
        "fastest": fastest_overall(entries, runtimes),  # over every runtime and precision hint
        "runtimes": runtimes,
        "int8": dict(zip(("reduce_range", "why"), int8_reduce_range(config))),
        "pytorch": pytorch,
        "variants": {name: ({"file": BASE_FILE} | entry if name == BASE else entry) for name, entry in entries.items()},
    }


def tolerances_of(config: ExportConfig, task: Task) -> dict:
    """The tolerances the checks applied, the int8 metric bound resolved to the task's where none was configured."""
    return dataclasses.asdict(config.tolerances) | {"int8_metric_drop": int8_metric_drop(config, task)}


def truncation_note(model, max_length: int) -> str:
    """What the runtime does with a text longer than max_length tokens: its decoder splits it into windows, or it is cut."""
    if DECODERS.get(task_of(model.config).decoder).windowed:
        return f"texts longer than {max_length} tokens are split into overlapping windows whose predictions are merged"
    return f"texts longer than {max_length} tokens are cut at the end (right truncation)"
