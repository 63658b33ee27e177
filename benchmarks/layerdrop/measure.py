"""Fine-tune each variant's teacher, cut it to every depth, and measure the metric and the latency of each cut."""

from __future__ import annotations

import copy
import time

import torch
from tqdm.auto import tqdm

from alembert.evaluate import predict_logits
from alembert.report import latency_ms
from benchmarks.table.significance import paired_difference
from compress.passes.layers import DropLayersConfig, drop_layers
from pipeline.run import prepare_teacher, setup


def measure(variants, bench) -> dict:
    """{"depths": [...], "variants": {name: {label, finetune_s, metric per depth}}, "gaps", "latency_ms"}."""
    torch.set_num_threads(bench.threads)
    prepared = setup(variants[0].config)  # the variants differ only in fine-tuning: one data setup serves both
    task, names, rows = prepared.task.task, prepared.task.label_names, prepared.loaders.eval.dataset
    result = {"metric": task.primary_metric, "eval_split": prepared.loaders.eval_split, "eval_examples": len(rows),
              "variants": {}, "latency_ms": {}}
    counts = {}
    for variant in variants:
        start = time.perf_counter()
        teacher, _ = prepare_teacher(prepared, variant.config)
        seconds = time.perf_counter() - start
        depth = teacher.config.num_hidden_layers
        metrics, counts[variant.name] = {}, {}
        for kept in tqdm(range(1, depth + 1), desc=f"{variant.name}: depths", leave=False):
            cut = drop_layers(copy.deepcopy(teacher), DropLayersConfig(strategy="depth", depth=kept)) if kept < depth else teacher
            logits, labels = predict_logits(cut, prepared.loaders.eval)
            metrics[kept] = task.metrics(logits, labels, names, rows=rows)[task.primary_metric]
            counts[variant.name][kept] = task.example_counts(logits, labels, names, rows=rows)
            if variant is variants[0]:  # a cut's architecture, hence its speed, is the same for both variants
                result["latency_ms"][kept] = latency_ms(cut, seq_len=bench.seq_len, runs=bench.settings.latency_runs)
        result["variants"][variant.name] = {"label": variant.label, "finetune_s": round(seconds, 1), "metric": metrics}
    result["depths"] = sorted(result["latency_ms"])
    gaps = {kept: paired_difference(counts["layerdrop"][kept], counts["plain"][kept], task.score_counts)
            for kept in result["depths"]}
    result["gaps"] = {kept: {"summary": gap.summary(), "p_value": gap.p_text()} for kept, gap in gaps.items()}
    return result
