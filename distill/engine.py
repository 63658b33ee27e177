"""The training engine: one loop for teacher fine-tuning, distillation and the no-KD baseline.

`fit` trains a student against an Objective (optionally with a frozen Teacher), evaluates on dev every epoch
or every `eval_every` optimizer steps, keeps the best dev weights in memory, and optionally writes resumable
checkpoints (distill/checkpoint.py) and TensorBoard events. Under torchrun it trains data-parallel
(distill/distributed.py). `evaluate` and `predict_logits` run a model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from alembert import hardware
from distill import distributed
from distill.checkpoint import Checkpointer, History, LoopState, fingerprint
from distill.layerdrop import advance, check_layerdrop, layer_drop
from alembert.errors import fail
from distill.losses import Objective
from alembert.tasks import task_of
from distill.models import Teacher, disable_attention_dropout, forward_features, in_fp32
from distill.teacher_cache import CacheBudget, CachedTeacher, cache_teacher
from alembert.devices import pins_memory, resolve_device
from alembert.evaluate import evaluate, predict_logits, to_device
from alembert.training import TrainConfig


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "auto": None}  # auto: autocast_dtype
# Settings a checkpoint must share with the run that resumes it (cache_teacher, patience etc. may change).
RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_ratio", "max_grad_norm", "seed", "grad_accum",
               "precision", "eval_every", "layerdrop", "bucket_batches")

__all__ = ["History", "TrainConfig", "evaluate", "fit", "predict_logits", "seed_everything"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class _Run:
    """What one `fit` call trains with; built once, read by the loop."""

    model: nn.Module
    modules: tuple[nn.Module, ...]
    parameters: list[nn.Parameter]
    train: DataLoader
    batches: int
    dev: DataLoader | None
    objective: Objective
    teacher: Teacher | CachedTeacher | None
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype, None: fp32
    desc: str
    checkpoints: Checkpointer | None
    writer: object | None
    wrapped: nn.Module | None = None  # the student in DistributedDataParallel under torchrun
    hand_averaged: list = dataclasses.field(default_factory=list)  # what the wrapper does not average
    on_evaluate: Callable[[int, dict[str, float]], None] | None = None


def fit(model: nn.Module, train: DataLoader, dev: DataLoader | None, objective: Objective, config: TrainConfig, *,
        teacher: Teacher | CachedTeacher | None = None, extra_modules: tuple[nn.Module, ...] = (),
        keep_best: bool = True, desc: str = "train", checkpoint_dir: str | Path | None = None,
        log_dir: str | Path | None = None, on_evaluate: Callable[[int, dict[str, float]], None] | None = None) -> History:
    """Train `model` in place; with `keep_best` it ends holding the weights of its best dev evaluation.

    Intermediate stages (layer-wise losses only) pass keep_best=False: their dev metric says nothing yet.
    `extra_modules` (e.g. TinyBERT's hidden projection) are optimised with the model but are not part of it.
    `checkpoint_dir` is where `checkpoint_every`/`resume` write and read; `log_dir` where TensorBoard writes.
    `on_evaluate(step, dev_metrics)` is called after each dev evaluation (a sweep reports it to Optuna and may
    raise optuna.TrialPruned from it, which ends training).
    """
    device = resolve_device(config.device)
    _validate(train, objective, teacher, config, checkpoint_dir, log_dir, device)
    if not config.attention_dropout:
        disable_attention_dropout(model)
    model.to(device)
    if teacher is not None:
        teacher.to(device)  # beside the student, so a GPU student also gets a GPU teacher (and cache pass)
    # a row the task feeds differently each epoch (masked afresh) has no teacher outputs to keep
    if teacher is not None and config.cache_teacher and task_of(model.config).repeats_inputs():
        reads = objective.teacher_reads(model.config.num_hidden_layers, teacher.model.config.num_hidden_layers)
        teacher = cache_teacher(teacher, train, device, reads, CacheBudget.of(config),
                                batch_size=config.eval_batch_size, say=_say, keep_in=config.teacher_store)
    run = _prepare(model, train, dev, objective, teacher, config, extra_modules, desc, checkpoint_dir, log_dir)
    run.on_evaluate = on_evaluate
    state = LoopState()
    if config.resume:
        restored = run.checkpoints.restore(run.modules, run.optimizer, run.scheduler, run.scaler)
        state = restored or state
        _say(f"{desc}: no checkpoint in {checkpoint_dir}, starting afresh" if restored is None
             else f"{desc}: already finished, its final weights loaded from {checkpoint_dir}" if state.finished
             else f"{desc}: resuming at step {state.step} (epoch {state.epoch + 1}, batch {state.batch})")
    if not state.finished:
        with layer_drop(model, config.layerdrop, config.seed):
            _train(run, state)
            if keep_best and state.best_state is not None:
                model.load_state_dict(state.best_state)
        state.finished = True
        if run.checkpoints is not None:
            run.checkpoints.save(state, run.modules, run.optimizer, run.scheduler, run.scaler)
    if run.writer is not None:
        run.writer.close()
    return state.history


def _validate(train, objective, teacher, config, checkpoint_dir, log_dir, device: torch.device) -> None:
    if objective.needs_teacher and teacher is None:
        raise fail("the objective has soft-target terms but no teacher was given", "pass a teacher or use hard labels only")
    if len(train) == 0:
        raise fail("the training set has no batches", "give a non-empty training set")
    if config.precision not in PRECISIONS or config.grad_accum < 1:
        raise fail(f"train.precision={config.precision}, train.grad_accum={config.grad_accum} are not valid",
                   f"use precision in {', '.join(PRECISIONS)} and grad_accum >= 1")
    if config.precision == "fp16" and device.type != "cuda":
        raise fail(f"train.precision=fp16 needs a CUDA GPU (fp16 autocast with a grad scaler), but training runs on {device}",
                   "use precision=bf16 or fp32 on this device, or train.device=cuda")
    for name in ("eval_every", "checkpoint_every"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise fail(f"train.{name}={getattr(config, name)} is not valid", f"use train.{name} >= 1, or null")
    if (config.checkpoint_every is not None or config.resume) and checkpoint_dir is None:
        raise fail("train.checkpoint_every / train.resume are set but this training step has no checkpoint directory",
                   "use them through `python -m distill` (checkpoints go under the run's output dir)")
    if config.layerdrop is not None:
        check_layerdrop(objective)
    if config.tensorboard and log_dir is None:
        raise fail("train.tensorboard=true but this training step has no log directory", "use it through `python -m distill`")


def _prepare(model, train, dev, objective, teacher, config, extra_modules, desc, checkpoint_dir, log_dir) -> _Run:
    device = next(model.parameters()).device
    modules = (model, *(module.to(device) for module in extra_modules))  # projections train beside the student
    train = distributed.shard_loader(train, config.seed, config.bucket_batches, pin_memory=pins_memory(device))
    batches = distributed.agree_min(len(train), device)
    seed_everything(config.seed)
    distributed.broadcast_parameters(modules[1:])  # the student: DistributedDataParallel starts it from rank 0's
    wrapped = distributed.data_parallel(model, device)
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    # fused: one kernel over all parameters; on a 2-core CPU it cuts AdamW's step over a 17M-parameter student
    # (12M of them the embedding table) from 70 ms to 14 ms, a third of a short-sentence training step
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    total_steps = config.epochs * math.ceil(batches / config.grad_accum)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    checkpoints = None
    if checkpoint_dir is not None and (config.checkpoint_every or config.resume):  # else no state is worth the disk
        settings = {key: getattr(config, key) for key in RESUME_KEYS}
        checkpoints = Checkpointer(checkpoint_dir, fingerprint(modules, stage=desc, terms=repr(objective.terms),
                                                               config=settings, batches=batches))
    writer = _tensorboard(log_dir) if config.tensorboard and distributed.is_main() else None
    hand_averaged = parameters if wrapped is None else [p for module in modules[1:] for p in module.parameters() if p.requires_grad]
    return _Run(model, modules, parameters, train, batches, dev, objective, teacher, config, optimizer, scheduler, scaler,
                device, autocast_dtype(config.precision, device, desc), desc, checkpoints, writer, wrapped, hand_averaged)


def autocast_dtype(precision: str, device: torch.device, desc: str = "train") -> torch.dtype | None:
    """The autocast dtype of `precision` on `device`, with "auto" resolved and said in one line."""
    dtype, why = chosen_autocast(precision, device)
    if precision == "auto":
        _say(f"{desc}: precision=auto on {device}: {why if dtype is not None else 'fp32 (' + why + ')'}")
    return dtype


def chosen_autocast(precision: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """"auto" is bf16 where the hardware has bf16 instructions (CPU: AMX or AVX-512-BF16; CUDA: bf16 support), else
    fp32; any other precision is itself."""
    if precision != "auto":
        return PRECISIONS[precision], f"precision={precision}"
    if device.type == "cuda":
        chosen, why = torch.cuda.is_bf16_supported(), "a CUDA GPU with bf16"
    elif device.type == "cpu":
        chosen, why = hardware.bf16_training(hardware.cpu())
    else:
        chosen, why = False, f"no bf16 autocast chosen on {device.type}"
    return (torch.bfloat16 if chosen else None), why


def _tensorboard(log_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise fail("train.tensorboard=true needs the tensorboard package", "pip install tensorboard, or set train.tensorboard=false") from None
    return SummaryWriter(str(log_dir))


def _say(message: str) -> None:
    if distributed.is_main():  # one line per event, not one per rank
        tqdm.write(message)


def _train(run: _Run, state: LoopState) -> None:
    config = run.config
    if state.batch >= run.batches:  # the checkpoint was taken at the end of an epoch
        state.epoch, state.batch = state.epoch + 1, 0
    while state.epoch < config.epochs:
        if _train_epoch(run, state):
            return
        state.epoch, state.batch = state.epoch + 1, 0


def _train_epoch(run: _Run, state: LoopState) -> bool:
    """Train from the loop's position to the end of its epoch; True when early stopping ends training."""
    config, model, objective = run.config, run.model, run.objective
    model.train()
    wanted = dict(hidden=objective.needs_hidden, attentions=objective.needs_attentions, values=objective.needs_values)
    total = config.epochs * run.batches
    batches = distributed.epoch_batches(run.train, state.epoch, state.batch, run.batches)
    desc = f"{run.desc} {state.epoch + 1}/{config.epochs}"
    quiet = {} if distributed.is_main() else {"disable": True}  # one bar, rank 0's
    progress = tqdm(batches, desc=desc, leave=False, dynamic_ncols=True, initial=state.batch, total=run.batches, **quiet)
    for batch in progress:
        index = state.batch
        batch = to_device(batch, run.device)
        step = state.epoch * run.batches + index
        advance(model, step, step / total)  # LayerDrop and module replacement draw this step's layers
        steps_after = (state.batch + 1) % config.grad_accum == 0 or state.batch + 1 == run.batches
        # accumulating micro-batches: DistributedDataParallel communicates only on the one before the optimizer step
        with contextlib.nullcontext() if run.wrapped is None or steps_after else run.wrapped.no_sync():
            loss, parts = _forward_backward(run, batch, wanted, step, total, state)
        state.batch += 1
        for name, value in {"loss": float(loss.detach()), **parts}.items():
            state.sums[name] = state.sums.get(name, 0.0) + value
        state.counted += 1
        state.last_loss = float(loss.detach())
        progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if state.batch % config.grad_accum == 0 or state.batch == run.batches:
            _optimizer_step(run, state)
            if _after_step(run, state):
                return True
    return False


def _forward_backward(run: _Run, batch: dict, wanted: dict, step: int, total: int, state: LoopState):
    objective, dtype = run.objective, run.dtype
    with torch.autocast(run.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        teacher_features = run.teacher.features(batch, **wanted) if objective.needs_teacher else None
        student_features = forward_features(run.model, batch, forward=run.wrapped, **wanted)
    # the losses in fp32 whatever the forward ran in: a bf16 softmax can make a KL negative
    loss, parts = objective(in_fp32(student_features), in_fp32(teacher_features), progress=step / total)
    if not torch.isfinite(loss):
        bad = next((name for name, value in parts.items() if not math.isfinite(value)), "the total")
        last = run.checkpoints.describe_latest() if run.checkpoints else "checkpoints were off (train.checkpoint_every)"
        raise fail(f"the loss became {float(loss.detach())} at step {step} (epoch {state.epoch + 1}) in term '{bad}'",
                   f"lower the learning rate, raise warmup, or check the data; {last}")
    run.scaler.scale(loss / run.config.grad_accum).backward()
    return loss, parts


def _optimizer_step(run: _Run, state: LoopState) -> None:
    distributed.average_gradients(run.hand_averaged)
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.parameters, run.config.max_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    if run.writer is not None:
        run.writer.add_scalar("train/lr", run.scheduler.get_last_lr()[0], state.step)
        run.writer.add_scalar("train/step_loss", state.last_loss, state.step)


def _after_step(run: _Run, state: LoopState) -> bool:
    """Evaluate, stop early and checkpoint when due after an optimizer step; True to stop training."""
    config = run.config
    end_of_epoch = state.batch == run.batches
    last_step = end_of_epoch and state.epoch + 1 == config.epochs
    due = state.step % config.eval_every == 0 if config.eval_every else end_of_epoch
    stop = False
    if due or (last_step and config.eval_every):
        _evaluate(run, state)
        stop = config.patience is not None and state.evals_since_best() >= config.patience
        if stop:
            _say(f"{run.desc}: no better dev metric for {config.patience} evaluation(s), stopping early")
    if run.checkpoints is not None and config.checkpoint_every and state.step % config.checkpoint_every == 0 and not stop:
        run.checkpoints.save(state, run.modules, run.optimizer, run.scheduler, run.scaler)
    return stop


def _evaluate(run: _Run, state: LoopState) -> None:
    """Record the dev metrics and the mean loss terms since the last evaluation; keep the best weights."""
    terms = distributed.mean_over_ranks({name: total / max(state.counted, 1) for name, total in state.sums.items()}, run.device)
    state.sums, state.counted = {}, 0
    metrics = evaluate(run.model, run.dev) if run.dev is not None and distributed.is_main() else {}
    metrics = distributed.broadcast_object(metrics)
    record = {"epoch": state.epoch + 1, "step": state.step, **terms, **metrics}
    state.history.epochs.append(record)
    score = metrics[task_of(run.model.config).primary_metric] if metrics else -terms["loss"]
    if score > state.history.best_metric:
        state.history.best_epoch, state.history.best_step, state.history.best_metric = state.epoch + 1, state.step, score
        state.best_state = copy.deepcopy(run.model.state_dict())
    if run.writer is not None:
        for name, value in record.items():
            if name not in ("epoch", "step"):
                run.writer.add_scalar(f"{'dev' if name in metrics else 'train'}/{name}", value, state.step)
        run.writer.flush()
    _say(f"{run.desc} epoch {state.epoch + 1} step {state.step}: "
         + ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k not in ("epoch", "step")))
    if run.on_evaluate is not None and metrics:
        run.on_evaluate(state.step, dict(metrics))
