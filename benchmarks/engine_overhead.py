"""The engine's cost over a bare PyTorch loop, and what teacher-logit caching saves per epoch.

    python benchmarks/engine_overhead.py                      # small random BERTs on the demo task, CPU
    python benchmarks/engine_overhead.py --hidden 256 --teacher-layers 6 --examples 1024
    python benchmarks/engine_overhead.py --out benchmarks/results/engine_overhead/small.json   # also save the figures

Both loops do the same work per step: a teacher forward without gradients, a student forward and
backward on hard + KD loss, clipping, AdamW and the linear schedule, over the same batches. They run
alternately in one process (`--repeats` times) so that machine load hits both alike; the ratio of
medians is the figure. Random weights: the timings do not depend on what the models know.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup

from alembert.data import DataConfig, encode, load_task, loader
from alembert.tasks import task_named
from alembert.demo import DemoConfig, vocabulary
from alembert.errors import atomic_write_text, run_cli
from alembert.training import TrainConfig
from distill.engine import fit, seed_everything
from distill.losses import Objective, Term, soft_targets
from distill.models import Teacher

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build(args):
    vocab = SPECIAL + vocabulary()
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    common = dict(vocab_size=len(vocab), hidden_size=args.hidden, num_attention_heads=max(1, args.hidden // 32),
                  intermediate_size=4 * args.hidden, max_position_embeddings=128, num_labels=2)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(num_hidden_layers=args.teacher_layers, **common))
    student = BertForSequenceClassification(BertConfig(num_hidden_layers=args.student_layers, **common))
    data = DataConfig(demo=DemoConfig(train_size=args.examples, dev_size=8, test_size=8), max_length=args.max_length)
    task = load_task(data)
    train = loader(encode(task, "train", tokenizer, data), tokenizer, batch_size=args.batch_size,
                   task=task_named("classification"), shuffle=True, seed=0)
    return teacher.eval(), student.state_dict(), student, train


def bare_loop(teacher, student, train, config: TrainConfig) -> float:
    """Seconds per step of the hand-written loop (one epoch)."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)  # as the engine
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * len(train)), len(train))
    student.train()
    start = time.perf_counter()
    for batch in train:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        logits = student(**inputs).logits
        loss = 0.5 * F.cross_entropy(logits, batch["labels"]) + 0.5 * soft_targets(logits, teacher_logits, 2.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / len(train)


def engine_epochs(teacher, student, train, config: TrainConfig) -> float:
    """Seconds of a whole `fit` call (no dev set)."""
    objective = Objective((Term("hard", 0.5), Term("kd", 0.5, {"temperature": 2.0})))
    start = time.perf_counter()
    fit(student, train, None, objective, config, teacher=Teacher(teacher), keep_best=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the caching comparison")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the figures to this JSON file, e.g. benchmarks/results/engine_overhead/NAME.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher, initial, student, train = build(args)
    steps = len(train)
    one_epoch = TrainConfig(epochs=1, batch_size=args.batch_size, cache_teacher=False, precision="fp32")  # as the bare loop
    bare, engine, cached, uncached = [], [], [], []
    for repeat in range(args.repeats + 1):  # repeat 0 warms up (thread pools, allocator) and is dropped
        seed_everything(0), student.load_state_dict(initial)
        bare.append(bare_loop(teacher, student, train, one_epoch))
        student.load_state_dict(initial)
        engine.append(engine_epochs(teacher, student, train, one_epoch) / steps)
        for cache, times in ((True, cached), (False, uncached)):
            student.load_state_dict(initial)
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, cache_teacher=cache, precision="fp32")
            times.append(engine_epochs(teacher, student, train, config) / args.epochs)
        if repeat == 0:
            bare, engine, cached, uncached = [], [], [], []
    figures = {"settings": vars(args) | {"out": str(args.out), "steps_per_epoch": steps},
               "bare_step_ms": 1000 * statistics.median(bare), "engine_step_ms": 1000 * statistics.median(engine),
               "engine_overhead": statistics.median(engine) / statistics.median(bare) - 1,
               "epoch_s_cached": statistics.median(cached), "epoch_s_uncached": statistics.median(uncached),
               "cached_over_uncached": statistics.median(cached) / statistics.median(uncached)}
    print(json.dumps(figures, indent=1))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(figures, indent=1))


if __name__ == "__main__":
    run_cli(main)
