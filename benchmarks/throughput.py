"""Training throughput on SST-2: what length-bucketed batches save, and what each recipe costs over hard labels.

    python benchmarks/throughput.py                                   # 8k SST-2 sentences, MiniLM-L6 -> 3 layers
    python benchmarks/throughput.py --examples 2000 --repeats 1       # a quicker look
    python benchmarks/throughput.py --out benchmarks/results/throughput/sst2.json

Every variant is one `fit` of the same 3-layer student (initialised from the teacher's layers) over the same rows,
for `--epochs` epochs, without a dev set; they run in turns in one process, `--repeats` times, and the ratios of the
medians are the figures:

- hard labels, plain random batches, against the same with length buckets (`train.bucket_batches`);
- `kd` (logit cache on, its one teacher pass included) against hard labels, and TinyBERT's intermediate terms
  against `kd`, with the teacher running every step and with the feature cache (its one pass included), all bucketed.

The teacher's head is untrained (timings do not depend on what a model knows). The CPU's model and flags are recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.table.report import machine
from alembert.data import DataConfig, encode, load_task, loader
from alembert.errors import atomic_write_text, fail, run_cli
from alembert.modeldir import load_classifier, load_tokenizer, resolve_source
from alembert.training import TrainConfig
from distill.engine import fit, seed_everything
from distill.losses import Objective, Term
from distill.models import StudentConfig, Teacher, build_student

OBJECTIVES = {
    "hard": Objective((Term("hard", 1.0),)),
    "kd": Objective((Term("hard", 0.5), Term("kd", 0.5, (("temperature", 4.0),)))),
    "tinybert": Objective((Term("tinybert_embedding", 1.0), Term("tinybert_hidden", 1.0, (("layers", "uniform"),)),
                           Term("tinybert_attention", 1.0, (("layers", "uniform"),)))),
}
# (name, objective, bucket_batches, cache_teacher): the rows the figures compare
VARIANTS = (("hard, random batches", "hard", None, True), ("hard, bucketed", "hard", 50, True),
            ("kd, bucketed", "kd", 50, True), ("tinybert intermediate, teacher every step", "tinybert", 50, False),
            ("tinybert intermediate, feature cache", "tinybert", 50, True))


def build(args):
    if not (args.data_dir / "train.tsv").is_file():
        raise fail(f"no SST-2 train.tsv in {args.data_dir}", "pass --data-dir DIR (it ships in ../shared/data/sst2)")
    source = resolve_source(args.teacher)
    tokenizer = load_tokenizer(source)
    data = DataConfig(task="files", train=str(args.data_dir / "train.tsv"), max_train_examples=args.examples)
    task = load_task(data)
    rows = encode(task, "train", tokenizer, data)
    teacher = load_classifier(source, task.label_names)[0].eval()
    return tokenizer, task, rows, teacher


def one_fit(args, tokenizer, task, rows, teacher, objective: str, bucket_batches: int | None, cache: bool) -> float:
    """Seconds per epoch of one `fit`, its one teacher-cache pass included."""
    seed_everything(0)
    student = build_student(teacher, StudentConfig(num_layers=args.student_layers))
    train = loader(rows, tokenizer, batch_size=args.batch_size, task=task.task, shuffle=True, seed=0)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, bucket_batches=bucket_batches,
                         cache_teacher=cache, precision=args.precision)
    uses_teacher = objective != "hard"
    start = time.perf_counter()
    fit(student, train, None, OBJECTIVES[objective], config, teacher=Teacher(teacher) if uses_teacher else None,
        keep_best=False, desc=objective)
    return (time.perf_counter() - start) / args.epochs


def student_parser(description: str, *, epochs: int) -> argparse.ArgumentParser:
    """The options every SST-2 training benchmark of a MiniLM-initialised student takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/sst2"))
    parser.add_argument("--teacher", default="minilm")
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--examples", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    return parser


def main() -> None:
    parser = student_parser(__doc__.splitlines()[0], epochs=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", help="train.precision of every variant (the README's figures: fp32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer, task, rows, teacher = build(args)
    warm = argparse.Namespace(**{**vars(args), "epochs": 1})
    one_fit(warm, tokenizer, task, rows[:256], teacher, "tinybert", 50, True)  # thread pools and allocator, then dropped
    times: dict[str, list[float]] = {name: [] for name, *_ in VARIANTS}
    for _ in range(args.repeats):
        for name, objective, buckets, cache in VARIANTS:
            times[name].append(one_fit(args, tokenizer, task, rows, teacher, objective, buckets, cache))
    epoch_s = {name: statistics.median(values) for name, values in times.items()}
    hard = epoch_s["hard, bucketed"]
    figures = {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine(),
               "epoch_s": epoch_s, "all_epoch_s": times,
               "bucketed_over_random": hard / epoch_s["hard, random batches"],
               "kd_over_hard": epoch_s["kd, bucketed"] / hard,
               "tinybert_over_kd": epoch_s["tinybert intermediate, feature cache"] / epoch_s["kd, bucketed"],
               "tinybert_live_over_kd": epoch_s["tinybert intermediate, teacher every step"] / epoch_s["kd, bucketed"]}
    print(json.dumps(figures, indent=1))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(figures, indent=1))


if __name__ == "__main__":
    run_cli(main)
