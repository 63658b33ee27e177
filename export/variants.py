"""Export variants: each takes ONNX file(s) already in the bundle and writes one more.

A variant is registered once under its name. Its builder yields candidate graphs, best first;
the bundle checks each candidate (parity or task metric) and keeps the first that passes, so
a fusion that breaks a pruned model falls back to a plainer graph with a note instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
from onnxruntime.quantization import quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.onnx_model import OnnxModel

from alembert.errors import fail
from alembert.registry import Registry
from export.config import ExportConfig, int8_reduce_range

BASE = "fp32"
BASE_FILE = "model.onnx"
PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}


@dataclass(frozen=True)
class Candidate:
    """One graph a builder offers, with notes for the manifest (what was fused, what was given up)."""

    path: Path
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildContext:
    """What builders may use: accepted variant files so far, attention shapes, settings, calibration batches."""

    work: Path
    accepted: Mapping[str, Path]
    heads: tuple[int, ...]
    hidden_size: int
    config: ExportConfig
    calibration: tuple[dict[str, np.ndarray], ...]
    fusion_model_type: str | None = "bert"  # the family's onnxruntime optimizer model_type (alembert.families)
    family: str = "bert"

    def fp32_source(self) -> tuple[str, Path]:
        """The fastest accepted fp32 graph: the fused one when it was built, else the plain export."""
        name = "optimized" if "optimized" in self.accepted else BASE
        return name, self.accepted[name]


Builder = Callable[[BuildContext, Path], Iterator[Candidate]]


@dataclass(frozen=True)
class Variant:
    name: str
    filename: str
    precision: str
    build: Builder
    needs_data: bool = False


VARIANTS: Registry[Variant] = Registry("export variant")  # the builders below register in dependency order


def register(name: str, *, precision: str, needs_data: bool = False) -> Callable[[Builder], Builder]:
    """Register a builder under `name`; a second registration of the same name is refused."""
    if precision not in PRECISIONS:
        raise fail(f"variant {name} has unknown precision {precision}", f"use one of {', '.join(PRECISIONS)}")

    def add(build: Builder) -> Builder:
        if name == BASE:
            raise fail(f"export variant '{name}' is the plain graph every bundle has", "give the new variant its own name")
        VARIANTS.add(name, Variant(name, f"model.{name}.onnx", precision, build, needs_data))
        return build

    return add


def resolve(names: tuple[str, ...]) -> tuple[Variant, ...]:
    """The requested variants in registry order (so dependencies come first), refusing unknown names."""
    unknown = [name for name in names if name not in VARIANTS and name != BASE]
    if unknown:
        raise fail(f"unknown export variant(s) {', '.join(unknown)}", f"choose from {', '.join(VARIANTS.names())}")
    return tuple(variant for name, variant in VARIANTS.items() if name in names)


@register("optimized", precision="fp32")
def build_optimized(ctx: BuildContext, out: Path) -> Iterator[Candidate]:
    """onnxruntime's transformer optimizer: attention, embedding-LayerNorm, skip-LayerNorm and GELU fusion."""
    source = ctx.accepted[BASE]
    if ctx.fusion_model_type is None:
        yield _unfused_note(source, out, ctx, f"onnxruntime's optimizer has no attention fusion for {ctx.family}")
    elif len(set(ctx.heads)) == 1:
        try:
            yield _fused(source, out, ctx, FusionOptions(ctx.fusion_model_type), "full fusion")
        except Exception as err:  # the optimizer's pattern matchers raise assorted errors on unusual graphs
            yield _unfused_note(source, out, ctx, f"attention fusion failed ({type(err).__name__}: {str(err)[:120]})")
            return
        yield _unfused_note(source, out, ctx, "fused attention broke parity")
    else:
        yield _unfused_note(source, out, ctx, f"layers have different head counts {list(ctx.heads)}, "
                                              "which one fused Attention op cannot express")


def _fused(source: Path, out: Path, ctx: BuildContext, options: FusionOptions, label: str) -> Candidate:
    # opt_level=0: write the fused graph only; onnxruntime's own graph optimizations run at session load.
    model = optimizer.optimize_model(str(source), model_type=ctx.fusion_model_type or "bert", num_heads=ctx.heads[0],
                                     hidden_size=ctx.hidden_size, optimization_options=options, opt_level=0)
    model.save_model_to_file(str(out))
    fused = {op: count for op, count in model.get_fused_operator_statistics().items() if count}
    summary = ", ".join(f"{op}x{count}" for op, count in sorted(fused.items())) or "nothing fused"
    return Candidate(out, (f"{label}: {summary}",))


def _unfused_note(source: Path, out: Path, ctx: BuildContext, reason: str) -> Candidate:
    options = FusionOptions(ctx.fusion_model_type or "bert")  # LayerNorm and GELU patterns are family-independent
    options.enable_attention = False
    candidate = _fused(source, out, ctx, options, "attention left unfused")
    return Candidate(out, (f"{reason}; fell back to LayerNorm/GELU fusion only",) + candidate.notes)


@register("int8_dynamic", precision="int8")
def build_int8_dynamic(ctx: BuildContext, out: Path) -> Iterator[Candidate]:
    """Dynamic quantization: int8 weights, activations quantized per batch at run time; no calibration."""
    name, source = ctx.fp32_source()
    reduce_range, why = int8_reduce_range(ctx.config)
    for per_channel in channel_choices(ctx.config):
        quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=reduce_range,
                         # fused graphs leave some tensor types unknown to the quantizer; they are all float here
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        yield Candidate(out, (f"from {name}; per_channel={per_channel}, reduce_range={reduce_range} ({why})",))


def channel_choices(config) -> tuple[bool, ...]:
    """Per-tensor scales first (the faster kernels), then per-channel ones if those fail the check: a student trained
    longer grows outlier weight columns that one scale per tensor cannot hold (an all-data SST-2 student: int8
    dynamic per tensor moved logits by 2.3 and accuracy by 1.1 points; per channel by 0.58 and 0.2)."""
    return (True,) if config.per_channel else (False, True)


class FeedReader(CalibrationDataReader):
    """Hands the calibration batches to onnxruntime's calibrator, one at a time."""

    def __init__(self, feeds: tuple[dict[str, np.ndarray], ...]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


@register("int8_static", precision="int8", needs_data=True)
def build_int8_static(ctx: BuildContext, out: Path) -> Iterator[Candidate]:
    """Static QDQ quantization calibrated on task data (MinMax, Entropy or Percentile)."""
    method = ctx.config.calibration.method
    if method not in CALIBRATION_METHODS:
        raise fail(f"calibration.method={method} is unknown", f"use one of {', '.join(CALIBRATION_METHODS)}")
    # The plain graph, shape-inferred: QDQ around MatMuls lets onnxruntime fuse them into integer kernels at load.
    prepared = ctx.work / ".int8_static.prepared.onnx"
    quant_pre_process(str(ctx.accepted[BASE]), str(prepared), skip_symbolic_shape=True)
    extra = {"CalibPercentile": ctx.config.calibration.percentile} if method == "percentile" else {}
    reduce_range, why = int8_reduce_range(ctx.config)
    try:
        for per_channel in channel_choices(ctx.config):
            quantize_static(str(prepared), str(out), FeedReader(ctx.calibration), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul", "Gemm", "Gather"], per_channel=per_channel,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CALIBRATION_METHODS[method], extra_options=extra)
            yield Candidate(out, (f"QDQ, {method} calibration on {sum(len(f['input_ids']) for f in ctx.calibration)} "
                                  f"examples; MatMul, Gemm and embedding Gather quantized, per_channel={per_channel}, "
                                  f"reduce_range={reduce_range} ({why})",))
    finally:
        prepared.unlink(missing_ok=True)


@register("fp16", precision="fp16")
def build_fp16(ctx: BuildContext, out: Path) -> Iterator[Candidate]:
    """Half-precision weights and compute, float32 inputs/outputs; meant for GPUs and NPUs, slow on x86 CPUs."""
    for name in ("optimized", BASE):
        if name in ctx.accepted:
            model = OnnxModel(onnx.load(str(ctx.accepted[name])))
            model.convert_float_to_float16(keep_io_types=True)
            model.save_model_to_file(str(out))
            yield Candidate(out, (f"from {name}, float16 with float32 inputs and outputs",))
