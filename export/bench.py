"""`python -m export.bench BUNDLE`: latency (p50, p90), throughput, peak memory and file size of every
bundle variant and of the PyTorch model it came from, measured in one run so the ratios are fair.

Runners are timed in turns over several rounds (export.measure.time_in_turns), so that background load
on a shared machine slows every runner alike instead of whichever happened to run at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from alembert.errors import fail, run_cli
from alembert.modeldir import load_model_dir
from alembert.report import save_table
from export.measure import random_feed, time_in_turns, torch_runner
from export.backends import BACKENDS, open_session
from export.runtime import available_variants, read_manifest

PYTORCH = "pytorch"
COLUMNS = ["runtime", "batch", "seq", "p50_ms", "p90_ms", "throughput_per_s", "speedup_vs_pytorch"]
SUMMARY_COLUMNS = ["runtime", "size_mb", "peak_rss_mb", "metric", "p50_ms_b1_s64", "speedup_b1_s64"]


@dataclass(frozen=True)
class BenchConfig:
    bundle: Path
    variants: tuple[str, ...] | None = None
    batches: tuple[int, ...] = (1, 8, 32)
    seqs: tuple[int, ...] = (32, 64, 128)
    runs: int = 20
    warmup: int = 3
    threads: int = 2
    model: str | None = None
    pytorch: bool = True
    memory: bool = True
    out: Path | None = None


def parse_args(argv: list[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--variants", nargs="*", default=None, help="default: every variant in the bundle")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8, 32])
    parser.add_argument("--seqs", nargs="*", type=int, default=[32, 64, 128])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="PyTorch model directory (default: the manifest's source_model)")
    parser.add_argument("--no-pytorch", dest="pytorch", action="store_false")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory probes")
    parser.add_argument("--out", type=Path, default=None, help="where bench.md/bench.json go (default: BUNDLE/bench)")
    args = parser.parse_args(argv)
    if args.runs < 2 or min(args.batches + args.seqs) < 1:
        raise fail("--runs must be at least 2 and batch/sequence sizes positive", "e.g. --runs 20 --batches 1 8 --seqs 32")
    return BenchConfig(args.bundle, tuple(args.variants) if args.variants else None, tuple(args.batches), tuple(args.seqs),
                       args.runs, args.warmup, args.threads, args.model, args.pytorch, args.memory, args.out)


def load_runners(config: BenchConfig, manifest: dict) -> tuple[dict, dict[str, float], dict[str, str]]:
    """Runner per name, file size per name, and the path each memory probe loads."""
    names = list(config.variants or available_variants(manifest))
    unknown = sorted(set(names) - set(available_variants(manifest)))
    if unknown:
        raise fail(f"bundle has no variant(s) {', '.join(unknown)}", f"choose from {', '.join(available_variants(manifest))}")
    runners, sizes, paths = {}, {}, {}
    if config.pytorch:
        model_dir = config.model or manifest.get("source_model", "")
        if not (Path(model_dir) / "config.json").is_file():
            raise fail(f"the PyTorch model {model_dir or '(none recorded)'} is not available",
                       "pass --model DIR, or --no-pytorch to time the ONNX variants only")
        torch.set_num_threads(config.threads)
        runners[PYTORCH] = torch_runner(load_model_dir(model_dir))
        sizes[PYTORCH] = sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors")) / 1e6 or \
            sum(p.stat().st_size for p in Path(model_dir).glob("*.bin")) / 1e6
        paths[PYTORCH] = model_dir
    for name in names:
        path = config.bundle / manifest["variants"][name]["file"]
        runners[name] = open_session(path, threads=config.threads).run  # one clear line for a missing or corrupt file
        sizes[name], paths[name] = path.stat().st_size / 1e6, str(path)
    for name, (runner, path) in other_runtimes(manifest, names, config).items():
        runners[name], sizes[name], paths[name] = runner, path.stat().st_size / 1e6, str(path)
    return runners, sizes, paths


def other_runtimes(manifest: dict, names: list[str], config: BenchConfig) -> dict:
    """'VARIANT on RUNTIME[ HINT]' -> (runner, file) for the chosen variants every other installed runtime passed
    the bundle's checks with (manifest "runtimes")."""
    found = {}
    for runtime, table in (manifest.get("runtimes") or {}).items():
        if runtime not in BACKENDS or not BACKENDS[runtime].available():
            continue
        for key, entry in (table.get("variants") or {}).items():
            variant = key.split("@")[0]
            if variant in names and "latency_ms" in entry:
                path = config.bundle / entry["file"]
                hint = entry.get("precision_hint")
                label = f"{variant} on {runtime}" + (f" {hint}" if hint not in (None, "f32") else "")
                found[label] = (open_session(path, runtime, config.threads, hint).run, path)
    return found


def manifest_entry(manifest: dict, name: str) -> dict:
    """The manifest's entry for a runner's name (a variant, PyTorch, or a variant on another runtime)."""
    if name in manifest["variants"]:
        return manifest["variants"][name]
    if " on " in name:
        variant, rest = name.split(" on ", 1)
        runtime, _, hint = rest.partition(" ")
        key = f"{variant}@{hint}" if hint else variant
        return (manifest.get("runtimes", {}).get(runtime, {}).get("variants") or {}).get(key, {})
    return manifest.get(PYTORCH, {})


def peak_memory(kind: str, path: str, batch: int, seq: int, threads: int) -> float | None:
    """Peak RSS of a fresh process that loads one model and runs the largest shape once."""
    result = subprocess.run([sys.executable, "-m", "export.memory", kind, path, str(batch), str(seq), str(threads)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]


def bench(config: BenchConfig) -> tuple[list[dict], list[dict]]:
    manifest = read_manifest(config.bundle)
    runners, sizes, paths = load_runners(config, manifest)
    vocab = Tokenizer.from_file(str(config.bundle / "tokenizer.json")).get_vocab_size()
    names = manifest.get("inputs", ["input_ids", "attention_mask"])
    rows = []
    for batch in config.batches:
        for seq in tqdm(config.seqs, desc=f"batch {batch}", unit="shape"):
            timings = time_in_turns(runners, random_feed(names, batch, seq, vocab), runs=config.runs, warmup=config.warmup)
            base = timings.get(PYTORCH)
            for name, timing in timings.items():
                rows.append({"runtime": name, "batch": batch, "seq": seq, "p50_ms": timing.p50_ms, "p90_ms": timing.p90_ms,
                             "throughput_per_s": timing.throughput,
                             "speedup_vs_pytorch": base.p50_ms / timing.p50_ms if base else ""})
    summary = []
    for name in tqdm(runners, desc="peak memory" if config.memory else "summary", unit="model"):
        kind = PYTORCH if name == PYTORCH else "onnx"
        entry = manifest_entry(manifest, name)
        probed = config.memory and " on " not in name  # the memory probe loads onnxruntime or PyTorch only
        goal = next((r for r in rows if r["runtime"] == name and r["batch"] == 1 and r["seq"] == 64), {})
        summary.append({"runtime": name, "size_mb": sizes[name],
                        "peak_rss_mb": peak_memory(kind, paths[name], max(config.batches), max(config.seqs), config.threads)
                        if probed else "",
                        "metric": entry.get("metric", ""), "p50_ms_b1_s64": goal.get("p50_ms", ""),
                        "speedup_b1_s64": goal.get("speedup_vs_pytorch", "")})
    return rows, summary


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    rows, summary = bench(config)
    out = config.out or config.bundle / "bench"
    print(save_table(summary, SUMMARY_COLUMNS, out, "bench_summary"))
    print()
    print(save_table(rows, COLUMNS, out, "bench"))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nthreads={config.threads}, runs={config.runs} per shape, timed in turns; load average {load} "
          f"on {os.cpu_count()} CPUs (figures are only comparable within one run); written to {out}/bench*.md|json")


if __name__ == "__main__":
    run_cli(main)
