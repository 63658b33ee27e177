"""The bundle's variants on every runtime besides onnxruntime (export.backends), each checked like the variant
itself and timed in the same run, and which (runtime, variant, precision hint) is fastest on the machine that
built the bundle.

A precision hint that computes in bf16 is judged as int8 is: by the task metric against fp32 when data is given,
and by the coarse logit bound. The bf16 hint is tried only where the CPU has bf16 instructions (AMX or AVX-512-BF16).
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from alembert import hardware
from export.backends import BACKENDS, DEFAULT, open_session, uses_contrib_ops
from export.config import ExportConfig
from export.judge import Judge, check
from export.measure import time_runner
from export.variants import BASE, Candidate


def runtime_table(accepted: dict[str, Path], entries: dict, judge: Judge, feed: dict, config: ExportConfig) -> dict:
    """{runtime: {"version", "variants": {name or name@hint: entry}}} or {"skipped": why} for each runtime."""
    table = {DEFAULT: {"version": BACKENDS[DEFAULT].version()}}
    for name in BACKENDS:
        backend = BACKENDS[name]
        if name == DEFAULT:
            continue
        if not backend.available():
            table[name] = {"skipped": f"not installed ({backend.install})"}
            continue
        table[name] = {"version": backend.version(), "variants": _variants(name, accepted, entries, judge, feed, config)}
    return table


def _variants(runtime: str, accepted: dict[str, Path], entries: dict, judge: Judge, feed: dict, config: ExportConfig) -> dict:
    backend = BACKENDS[runtime]
    hints = [hint for hint in backend.hints if hint != "bf16" or hardware.cpu().has_bf16]
    out = {}
    for variant, path in tqdm(accepted.items(), desc=runtime, unit="variant"):
        if not backend.runs_contrib_ops and uses_contrib_ops(path):
            out[variant] = {"skipped": "the graph uses onnxruntime's own fused operators"}
            continue
        for hint in hints:
            key = variant if hint in (None, "f32") else f"{variant}@{hint}"
            precision = judged_precision(entries[variant]["precision"], hint)
            entry, problem = check(precision, Candidate(path), judge, entries[BASE], runtime=runtime, hint=hint)
            if problem is not None:
                out[key] = {"skipped": problem}
                continue
            session = open_session(path, runtime, config.latency.threads, hint)
            timing = time_runner(session.run, feed, runs=config.latency.runs, warmup=config.latency.warmup)
            out[key] = {**entry, "precision_hint": hint, "latency_ms": timing.p50_ms}
    return out


def judged_precision(variant_precision: str, hint: str | None) -> str:
    """What a graph of `variant_precision` computes in under `hint`: a bf16 hint lowers fp32 and fp16 to bf16."""
    if hint == "bf16" and variant_precision in ("fp32", "fp16"):
        return "bf16"
    return variant_precision


def fastest(entries: dict) -> str | None:
    """The accepted variant with the lowest latency measured in this run, on this machine."""
    timed = {name: entry["latency_ms"] for name, entry in entries.items() if "latency_ms" in entry and "skipped" not in entry}
    return min(timed, key=timed.get) if timed else None


def fastest_overall(entries: dict, runtimes: dict) -> dict | None:
    """The (runtime, variant, precision hint) with the lowest latency measured in this run."""
    best = fastest(entries)
    timed = [] if best is None else [{"runtime": DEFAULT, "variant": best, "precision_hint": None,
                                      "latency_ms": entries[best]["latency_ms"]}]
    for runtime, table in runtimes.items():
        for key, entry in (table.get("variants") or {}).items():
            if "latency_ms" in entry:
                timed.append({"runtime": runtime, "variant": key.split("@")[0], "precision_hint": entry["precision_hint"],
                              "latency_ms": entry["latency_ms"]})
    return min(timed, key=lambda row: row["latency_ms"]) if timed else None
