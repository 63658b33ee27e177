"""bf16 autocast against fp32 for training: time per epoch and accuracy on the GLUE dev set, per seed, in one run.

    python benchmarks/precision.py --out benchmarks/results/precision/sst2.json      # 8k SST-2 sentences, 3 seeds
    python benchmarks/precision.py --examples 1000 --seeds 0 --epochs 1             # a quicker look

The same 3-layer student (initialised from MiniLM-L6's layers) trains on hard labels with `train.precision=fp32`
and `bf16`, for each seed, in turns in one process (length-bucketed batches, as by default). Accuracy is measured in
fp32 on SST-2's test split (the 872 GLUE dev sentences). The figures: the bf16/fp32 epoch-time ratio, each seed's
accuracy gap, the paired bootstrap interval of the gap over all seeds' sentences, and the seed-to-seed spread of
fp32 itself, which is the noise a gap is compared with. The CPU's model and flags are recorded.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from alembert.data import DataConfig, encode, load_task, loader
from alembert.errors import atomic_write_text, fail, run_cli
from alembert.evaluate import predict_logits
from alembert.modeldir import load_classifier, load_tokenizer, resolve_source
from alembert.training import TrainConfig
from benchmarks.table.report import machine
from benchmarks.table.significance import paired_difference
from benchmarks.throughput import student_parser
from distill.engine import fit, seed_everything
from distill.losses import Objective, Term
from distill.models import StudentConfig, build_student

HARD = Objective((Term("hard", 1.0),))
PRECISIONS = ("fp32", "bf16")


def build(args):
    if not (args.data_dir / "train.tsv").is_file():
        raise fail(f"no SST-2 train.tsv in {args.data_dir}", "pass --data-dir DIR (it ships in ../shared/data/sst2)")
    source = resolve_source(args.teacher)
    tokenizer = load_tokenizer(source)
    data = DataConfig(task="files", train=str(args.data_dir / "train.tsv"), test=str(args.data_dir / "test.tsv"),
                      max_train_examples=args.examples)
    task = load_task(data)
    train = loader(encode(task, "train", tokenizer, data), tokenizer, batch_size=args.batch_size, task=task.task,
                   shuffle=True, seed=0)
    test = loader(encode(task, "test", tokenizer, data), tokenizer, batch_size=128, task=task.task)
    return load_classifier(source, task.label_names)[0].eval(), train, test


def one_fit(args, teacher, train, test, seed: int, precision: str) -> tuple[float, np.ndarray]:
    """Seconds per epoch, and which test sentences the trained student gets right."""
    seed_everything(seed)
    student = build_student(teacher, StudentConfig(num_layers=args.student_layers))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, precision=precision)
    start = time.perf_counter()
    fit(student, train, None, HARD, config, keep_best=False, desc=f"{precision} seed {seed}")
    seconds = (time.perf_counter() - start) / args.epochs
    logits, labels = predict_logits(student, test)
    return seconds, (logits.argmax(-1) == labels).numpy()


def main() -> None:
    parser = student_parser(__doc__.splitlines()[0], epochs=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher, train, test = build(args)
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    correct: dict[str, list[np.ndarray]] = {p: [] for p in PRECISIONS}
    for seed in args.seeds:
        for precision in PRECISIONS:
            epoch_s, right = one_fit(args, teacher, train, test, seed, precision)
            seconds[precision].append(epoch_s)
            correct[precision].append(right)
    accuracy = {p: [float(right.mean()) for right in correct[p]] for p in PRECISIONS}
    gap = paired_difference(np.concatenate(correct["bf16"]), np.concatenate(correct["fp32"]))  # bf16 - fp32
    figures = {
        "settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine(),
        "epoch_s": seconds, "accuracy": accuracy,
        "bf16_over_fp32_time": statistics.median(b / f for b, f in zip(seconds["bf16"], seconds["fp32"])),
        "gap_points_per_seed": [round(100 * (b - f), 2) for b, f in zip(accuracy["bf16"], accuracy["fp32"])],
        "gap_points_pooled": gap.summary(), "gap_p": gap.p_text(),
        "fp32_seed_spread_points": round(100 * (max(accuracy["fp32"]) - min(accuracy["fp32"])), 2),
    }
    print(json.dumps(figures, indent=1))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(figures, indent=1))


if __name__ == "__main__":
    run_cli(main)
