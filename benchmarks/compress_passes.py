"""Figures for the compression passes: accuracy, parameters, size, FLOPs and latency, before and after
each pass and after recovery distillation (the uncompressed model is the teacher).

    python benchmarks/compress_passes.py --model outputs/DATE/TIME/student --data demo
    python benchmarks/compress_passes.py --model path/to/sst2/student --data ../shared/data/sst2

`--model` (required) is a model directory saved by python -m distill or save_pretrained. Every scenario
starts again from it. `--data` is "demo" or a folder with SST-2-style train.tsv and test.tsv (sentence,
label; test.tsv is GLUE's labelled validation set, used as the metric split). Writes
benchmarks/results/compress_passes/<data><tag>.{md,json}. Latency is batch 1 at sequence length 64 on
this CPU, median of 50 runs: on a shared machine compare rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from compress.cli import task_loaders
from compress.pipeline import RecoveryConfig, run_pipeline
from distill.recovery import kd_recovery
from compress.registry import config_from_name
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.errors import atomic_write_text, fail, run_cli
from alembert.training import KDConfig, TrainConfig
from alembert.modeldir import load_model_dir, load_tokenizer
from alembert.report import latency_ms, markdown_table

RESULTS = Path(__file__).resolve().parent / "results" / "compress_passes"

SCENARIOS = {
    "prune_heads 50%": [("prune_heads", {"ratio": 0.5, "scope": "global"})],
    "prune_ffn 50%": [("prune_ffn", {"ratio": 0.5})],
    "prune_hidden 25%": [("prune_hidden", {"ratio": 0.25})],
    "drop_layers top 1": [("drop_layers", {"strategy": "top", "count": 1})],
    "sparsity 50%": [("sparsity", {"sparsity": 0.5})],
    "share_layers G=1": [("share_layers", {"groups": 1})],
    "factorize E=128": [("factorize_embeddings", {"embedding_size": 128})],
    "quantize_dynamic": [("quantize_dynamic", {})],
    "cast fp16": [("cast", {"dtype": "fp16"})],
    "combined": [("prune_ffn", {"ratio": 0.5}), ("prune_hidden", {"ratio": 0.25}), ("share_layers", {"groups": 1}),
                 ("factorize_embeddings", {"embedding_size": 128}), ("quantize_dynamic", {})],
}
COLUMNS = ["scenario", "step", "accuracy", "params", "non_embedding_params", "size_mb", "gflops", "latency_ms"]


def check_args(args: argparse.Namespace) -> None:
    """A missing or wrong model, data folder or scenario is one line before anything loads."""
    if args.model is None:
        raise fail("--model is required", "pass --model DIR, a model directory saved by python -m distill or save_pretrained")
    if not (Path(args.model).expanduser() / "config.json").is_file():
        raise fail(f"--model {args.model} is not a saved model directory (no config.json)",
                   "pass a directory saved by python -m distill or save_pretrained")
    if args.data != "demo":
        missing = [name for name in ("train.tsv", "test.tsv") if not (Path(args.data).expanduser() / name).is_file()]
        if missing:
            raise fail(f"--data {args.data} lacks {', '.join(missing)}",
                       "pass --data demo, or a folder with SST-2-style train.tsv and test.tsv (columns sentence, label)")
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        raise fail(f"unknown scenario(s) {', '.join(map(repr, unknown))}", f"choose from {', '.join(map(repr, SCENARIOS))}")


def data_config(data: str, train_examples: int) -> DataConfig:
    if data == "demo":
        return DataConfig(task="demo", max_length=64, max_train_examples=train_examples,
                          demo=DemoConfig(train_size=4000, dev_size=500, test_size=500))
    folder = Path(data)
    return DataConfig(task="files", train=str(folder / "train.tsv"), dev=str(folder / "test.tsv"), max_length=64,
                      max_train_examples=train_examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory to compress (required)")
    parser.add_argument("--data", default="demo")
    parser.add_argument("--train-examples", type=int, default=2000, help="training rows for recovery and Taylor")
    parser.add_argument("--recovery-epochs", type=int, default=1)
    parser.add_argument("--recovery-lr", type=float, default=5e-5)
    parser.add_argument("--tag", default="", help="suffix for the result file names")
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for <data><tag>.{md,json}")
    args = parser.parse_args()
    check_args(args)
    torch.manual_seed(0)
    base, tokenizer = load_model_dir(args.model).eval(), load_tokenizer(args.model)
    data = task_loaders(data_config(args.data, args.train_examples), tokenizer, base, batch_size=32)
    recovery = RecoveryConfig(at_end=True, kd=KDConfig(temperature=2.0, alpha=0.5),
                              train=TrainConfig(epochs=args.recovery_epochs, batch_size=32, lr=args.recovery_lr))
    rows = []
    for scenario in args.scenarios:
        steps = [config_from_name(name, settings) for name, settings in SCENARIOS[scenario]]
        start = time.perf_counter()
        model, scenario_rows = run_pipeline(copy.deepcopy(base), tokenizer, steps, data=data, recovery=recovery, distiller=kd_recovery)
        for row in scenario_rows if not rows else scenario_rows[1:]:  # the input row once
            rows.append({"scenario": scenario if row["step"] != "input" else "-", "accuracy": row.get("metric"), **row})
        # the scenario's final model timed again, longer: 50 runs instead of the pipeline's quick 20
        rows[-1]["latency_ms"] = round(latency_ms(model, seq_len=64, runs=50, warmup=5), 2)
        print(f"{scenario}: {time.perf_counter() - start:.0f}s", flush=True)
    name = ("demo" if args.data == "demo" else Path(args.data).name) + args.tag
    table = markdown_table(rows, COLUMNS)
    settings = f"recovery: {args.train_examples} examples, {args.recovery_epochs} epoch(s), lr {args.recovery_lr}"
    atomic_write_text(args.out / f"{name}.md", f"model: {args.model}, data: {args.data}, {settings}\n\n{table}\n")
    atomic_write_text(args.out / f"{name}.json", json.dumps(rows, indent=2) + "\n")
    print(f"{table}\n\nwritten: {args.out / name}.md, .json")


if __name__ == "__main__":
    run_cli(main)
