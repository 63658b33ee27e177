"""PyTorch -> ONNX with the TorchScript exporter, named explicitly (torch >= 2.9 defaults to dynamo).

The exported graph takes the tokenizer's inputs with dynamic batch and sequence axes and
returns the logits only.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from alembert.errors import fail
from alembert.families import entry
from alembert.tasks import task_of

EXPORTER = "torch.onnx.export (TorchScript, dynamo=False)"
MIN_OPSET = 17
OUTPUT_NAME = "logits"


class LogitsOnly(nn.Module):
    """Positional inputs in a fixed order -> the task's output tensors (logits; start and end logits for spans), so
    the graph's inputs carry the tokenizer's names."""

    def __init__(self, model: PreTrainedModel, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.task = task_of(model.config)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.task.output_tensors(self.model(**dict(zip(self.input_names, inputs))))


@contextlib.contextmanager
def export_patches(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """Put the model in the state the exporter needs, and restore it afterwards.

    - eval mode: this exporter does not switch modes itself, and dropout would be traced into the graph.
    - eager attention: sdpa exports as one opaque pattern that onnxruntime's optimizer cannot fuse
      into its Attention op; the eager softmax(QK^T)V pattern fuses.
    """
    was_training = model.training
    attention = getattr(model.config, "_attn_implementation", None)
    model.eval()
    if attention not in (None, "eager"):
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if attention not in (None, "eager"):
            model.set_attn_implementation(attention)
        model.train(was_training)


def model_input_names(model: PreTrainedModel, tokenizer) -> tuple[str, ...]:
    """The tokenizer's outputs that the model's forward accepts (DistilBERT and RoBERTa take no token types)."""
    accepted = set(inspect.signature(model.forward).parameters)
    names = tuple(name for name in tokenizer.model_input_names if name in accepted)
    if "input_ids" not in names or "attention_mask" not in names:
        raise fail(f"the tokenizer gives {list(tokenizer.model_input_names)} but the model needs input_ids and attention_mask",
                   "save the model with its own tokenizer (save_pretrained on both)")
    return names


def example_inputs(tokenizer, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Two rows of different lengths, so tracing sees padding and a batch dimension above 1."""
    encoded = tokenizer(["an example sentence for tracing the graph", "short"], padding=True, return_tensors="pt")
    return tuple(encoded[name] for name in names)


def export_onnx(model: PreTrainedModel, tokenizer, path: Path, *, opset: int = MIN_OPSET) -> tuple[str, ...]:
    """Write `model` to `path` as ONNX; return the graph's input names. Fails with one line naming the family."""
    if opset < MIN_OPSET:
        raise fail(f"opset={opset} is too old", f"use opset={MIN_OPSET} or newer")
    names = model_input_names(model, tokenizer)
    outputs = task_of(model.config).onnx_outputs()  # the task names its outputs and their dynamic axes
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | outputs
    with export_patches(model), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes; parity checks catch real problems
        wrapper = LogitsOnly(model, names).eval()
        try:
            torch.onnx.export(wrapper, example_inputs(tokenizer, names), str(path), input_names=list(names),
                              output_names=list(outputs), dynamic_axes=axes, opset_version=opset, dynamo=False)
        except Exception as err:  # the exporter raises many types (RuntimeError, SymbolicValueError, TypeError...)
            family = getattr(model.config, "model_type", type(model).__name__)
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise fail(f"ONNX export of the {family} model ({type(model).__name__}) failed: {first_line}",
                       "this architecture or compression result has an operation the ONNX exporter cannot trace; "
                       "set ALEMBERT_DEBUG=1 for the traceback") from err
    return names


def attention_shapes(model: PreTrainedModel) -> tuple[tuple[int, ...], int]:
    """Heads per layer (as the attention modules hold them) and the attention width, for the ORT fusion pass.

    Pruned models may keep different head counts per layer; the config alone would hide that. The width
    is heads x head size: the hidden size, except after head pruning was compacted for export.
    """
    heads, widths = [], set()
    for module in model.modules():
        count = getattr(module, "num_attention_heads", None) or getattr(module, "n_heads", None)
        if isinstance(count, int) and any(hasattr(module, q) for q in ("query", "q_lin", "q_proj")):
            heads.append(count)
            widths.add(int(getattr(module, "all_head_size", model.config.hidden_size)))
    if not heads and not hasattr(model.config, "num_attention_heads"):
        return (0,), 0  # no attention at all (a BiLSTM, CNN or static student): 0 lets onnxruntime's optimizer look
    if not heads:
        heads = [int(model.config.num_attention_heads)]
    # onnxruntime's fuser wants heads x head size here (it warns that it differs from q/k/v's input width, and fuses)
    return tuple(heads), widths.pop() if len(widths) == 1 else int(model.config.hidden_size)


def supported_length(model: PreTrainedModel, tokenizer, requested: int) -> int:
    """The longest input the graph can take: the position table (RoBERTa's starts after the padding
    index) and the tokenizer's own limit cap the requested length, so truncation never overflows positions."""
    positions = int(getattr(model.config, "max_position_embeddings", requested))
    positions -= entry(model).position_offset(model.config)
    tokenizer_limit = tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else requested
    return max(2, min(requested, positions, tokenizer_limit))
