"""Quantization in PyTorch: dynamic int8 on the Linear layers, and fp16/bf16 casting.

Saving: a cast model saves with save_pretrained like any other. A dynamic-int8 model cannot (its
weights are packed int8 parameters that the Auto classes do not know); compress.saving unpacks each
Linear into its int8 weight, scale, zero point and bias, and writes them with the float rest of the
model to `model_int8.safetensors` beside config.json and the tokenizer. `compress.saving.load_compressed`
rebuilds the float model from the config, re-applies `quantize_linear_int8` and sets those values,
which gives the same logits. ONNX int8 belongs to export/.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from alembert.families import record, require_float32
from compress.registry import register_pass
from alembert.errors import fail

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class QuantizeDynamicConfig:
    """Dynamic int8: Linear weights stored as int8, activations quantized on the fly (CPU inference only)."""


@dataclass(frozen=True)
class CastConfig:
    """Cast every floating-point weight to `dtype` (fp16 | bf16)."""

    dtype: str = "fp16"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise fail(f"cast.dtype={self.dtype} is unknown", f"use one of {', '.join(DTYPES)}")


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao on every call
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


@register_pass("quantize_dynamic", QuantizeDynamicConfig, precision=True)
def quantize_dynamic(model: nn.Module, config: QuantizeDynamicConfig, *, batches=None) -> nn.Module:
    require_float32(model, "quantize_dynamic")
    record(model, {"pass": "quantize_dynamic", "dtype": "qint8", "modules": "Linear"})
    return quantize_linear_int8(model)


@register_pass("cast", CastConfig, precision=True)
def cast(model: nn.Module, config: CastConfig, *, batches=None) -> nn.Module:
    require_float32(model, "cast")
    record(model, {"pass": "cast", "dtype": config.dtype})
    return model.to(DTYPES[config.dtype])
