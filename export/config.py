"""Typed settings for `python -m export`, built from alembert/conf/export.yaml by `alembert.config.from_dict`."""

from __future__ import annotations

from dataclasses import dataclass, field

from alembert import hardware
from alembert.config import bounded, one_of
from alembert.data import DataConfig
from export.providers import EXECUTION_PROVIDERS

DEFAULT_VARIANTS = ("optimized", "int8_dynamic", "int8_static", "fp16")


@dataclass(frozen=True)
class ParityConfig:
    """Where ONNX outputs are compared with PyTorch's: every batch size at every maximum length.

    Batches are cut from real texts of different lengths, so all but the longest row are padded.
    """

    batch_sizes: tuple[int, ...] = (1, 4, 16)
    max_lengths: tuple[int, ...] = (16, 64, 128)
    samples: int = 32


@dataclass(frozen=True)
class Tolerances:
    """How far each kind of variant may stray before the export fails.

    fp32 graphs (plain and fused) are held to max |logit difference| (over the output rows the task
    reads: every real token for a token task, padding aside); fp16 to a looser bound (half precision
    keeps ~3 significant digits). int8 variants are judged on the task metric when data is given
    (drop in points of the metric, as a fraction; None: the task's own bound, Task.int8_metric_drop,
    2 points for sequence tasks and 1 point of entity F1 for token classification), and always by a
    coarse logit bound that catches a broken graph (None: the task's, 1.0 for one row per
    sequence, 3.0 for token tasks, whose maximum runs over every real token of the parity set).
    """

    fp32: float = 1e-4
    fp16: float = 2e-2
    int8_logits: float | None = bounded(None, low=0.0)  # None: the task's own (Task.int8_logit_bound)
    int8_metric_drop: float | None = bounded(None, low=0.0)


@dataclass(frozen=True)
class CalibrationConfig:
    """Static QDQ quantization: calibration method (minmax | entropy | percentile) and sample count."""

    method: str = "minmax"
    samples: int = 128
    percentile: float = 99.999


@dataclass(frozen=True)
class LatencyConfig:
    """The single latency figure each manifest entry carries (the full grid is `python -m export.bench`)."""

    batch_size: int = 1
    seq_len: int = 64
    runs: int = 30
    warmup: int = 5
    threads: int = 2


@dataclass(frozen=True)
class ExportConfig:
    """What to export, where, which variants, and how strictly to check them.

    `out` defaults to `<model>-onnx` beside the model directory. `data` is optional task data
    for calibration (train split) and the dev metric (dev split, else test).
    """

    model: str | None = None
    out: str | None = None
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    opset: int = 17
    max_length: int = 128
    per_channel: bool = False
    reduce_range: bool | None = None  # int8 7-bit weights; None: chosen by the CPU (alembert.hardware)
    provider: str = one_of("cpu", tuple(EXECUTION_PROVIDERS))  # onnxruntime's execution provider for the checks
    data: DataConfig | None = None
    metric_examples: int | None = 2000
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    parity: ParityConfig = field(default_factory=ParityConfig)
    tolerances: Tolerances = field(default_factory=Tolerances)
    latency: LatencyConfig = field(default_factory=LatencyConfig)


def int8_reduce_range(config: ExportConfig) -> tuple[bool, str]:
    """The reduce_range every int8 variant uses, and why: the configured value, else the CPU's choice."""
    if config.reduce_range is not None:
        return config.reduce_range, "set by reduce_range"
    return hardware.int8_reduce_range(hardware.cpu())
