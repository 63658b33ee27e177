"""The typed training settings every stage shares: the engine trains with TrainConfig, and compress's recovery
distillation and the pipeline pass TrainConfig and KDConfig through without importing the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from alembert.config import bounded, matching, one_of

if TYPE_CHECKING:
    from torch import nn

    from alembert.tasks.base import Task
    from torch.utils.data import DataLoader


DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"  # train.device (alembert.devices resolves it)
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = bounded(3, low=1)
    batch_size: int = bounded(32, low=1)  # per process: the global batch is batch_size * world size * grad_accum
    eval_batch_size: int = bounded(128, low=1)
    lr: float = bounded(1e-4, above=0.0)
    weight_decay: float = bounded(0.01, low=0.0)
    warmup_ratio: float = bounded(0.1, low=0.0, high=1.0)
    max_grad_norm: float = bounded(1.0, above=0.0)
    seed: int = bounded(42, low=0)
    # compute what the objective reads from the teacher once (logits, and the layers' features that layer-wise terms
    # read, in fp16) and reuse it every epoch (distill.teacher_cache)
    cache_teacher: bool = True
    cache_memory_gb: float = bounded(4.0, low=0.0)  # cached layer features up to this size stay in memory,
    cache_disk_gb: float = bounded(32.0, low=0.0)  # up to this size they are memory-mapped; beyond, the teacher runs
    cache_dir: str | None = None  # where the memory-mapped file goes; None: the system's temporary directory
    # a directory where cached teacher logits are kept between runs (distill.teacher_store), keyed by the teacher's
    # weights and the rows, so a later run on the same transfer set reads them instead; None: within the run only
    teacher_store: str | None = None
    grad_accum: int = bounded(1, low=1)  # optimizer step every N batches: an effective batch of batch_size * grad_accum
    # bf16: autocast, fp32 weights; fp16: CUDA only, grad scaler; auto (the default): bf16 where the CPU has AMX or
    # AVX-512-BF16 (or the GPU bf16), else fp32. bf16 kept SST-2 accuracy within noise at 0.54x the epoch time
    # (benchmarks/precision.py; README, "Training throughput")
    precision: str = one_of("auto", ("fp32", "bf16", "fp16", "auto"))
    # where the student, teacher, projections, teacher cache and batches live (alembert.devices): auto is this
    # rank's CUDA GPU when there is one, else the CPU; cpu, cuda, cuda:N or mps name one
    device: str = matching("auto", DEVICE_PATTERN, DEVICE_CHOICES)
    # false: train without attention-probability dropout, so SDPA runs its fused kernel instead of materialising and
    # masking every [batch, heads, seq, seq] map (2.4x faster fine-tuning at sequence 384 on a 2-core CPU)
    attention_dropout: bool = True
    # LayerDrop (Fan et al. 2019): skip each layer with this probability at each training step, so that the model can
    # later be cut to any depth (compress drop_layers strategy=depth) without retraining; null: off
    layerdrop: float | None = bounded(None, low=0.0, high=0.99)
    # length-bucketed batches: shuffle, sort by length within buckets of this many global batches, shuffle the
    # batches; far less padding on short-sentence data (alembert.batching); null: plain random batches
    bucket_batches: int | None = bounded(50, low=1)
    patience: int | None = bounded(None, low=1)  # stop after this many evaluations without a better dev metric
    eval_every: int | None = bounded(None, low=1)  # evaluate every N optimizer steps; None: at the end of each epoch
    checkpoint_every: int | None = bounded(None, low=1)  # write a resumable checkpoint every N optimizer steps; None: none
    resume: bool = False  # continue from the latest checkpoint, if there is one
    tensorboard: bool = False  # write TensorBoard event files (needs `pip install tensorboard`)


@dataclass(frozen=True)
class KDConfig:
    """Hinton soft targets mixed with the hard labels: alpha*hard + (1-alpha)*soft.

    `soft_loss` is "kd" (KL at temperature T) or "logit_mse"; a task may overrule it (regression distils with MSE).
    """

    temperature: float = bounded(4.0, above=0.0)
    alpha: float = bounded(0.5, low=0.0, high=1.0)
    scale_by_t2: bool = True
    soft_loss: str = one_of("kd", ("kd", "logit_mse"))


class Distiller(Protocol):
    """Distil `student` from a frozen `teacher` with Hinton KD; compress's recovery calls one, distill provides it
    (distill.recovery.kd_recovery), and the entry points hand it over, so compress never imports distill."""

    def __call__(self, student: nn.Module, teacher: nn.Module, train: DataLoader, dev: DataLoader | None, *,
                 kd: KDConfig, train_config: TrainConfig, task: Task) -> nn.Module: ...
