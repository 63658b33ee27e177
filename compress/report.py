"""One row per pass: parameters, size, FLOPs, latency, drift and the dev metric."""

from __future__ import annotations

import io
import warnings

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from alembert.families import float_dtype, is_quantized
from compress.passes.sparsity import linear_sparsity
from alembert.evaluate import evaluate
from alembert.modeldir import MODEL_INPUTS
from alembert.tasks import task_of
from alembert.report import latency_ms

COLUMNS = ["step", "params", "non_embedding_params", "nonzero_params", "size_mb", "gflops", "latency_ms",
           "logit_drift", "metric"]


def _quantized_linear_weights(model: nn.Module) -> list[Tensor]:
    weights = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if is_quantized(module) and callable(weight):
            weights.append(weight())
            bias = module.bias()
            if bias is not None:
                weights.append(bias)
    return weights


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total, outside the embedding tables, and non-zero parameters; int8 linear weights count too."""
    tensors = [p.detach() for p in model.parameters()] + _quantized_linear_weights(model)
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    total = sum(t.numel() for t in tensors)
    nonzero = sum(int(torch.count_nonzero(t.int_repr() if t.is_quantized else t)) for t in tensors)
    return {"params": total, "non_embedding_params": total - embedding, "nonzero_params": nonzero}


def serialized_mb(model: nn.Module) -> float:
    """Bytes of torch.save(state_dict), in MB: what the weights take on disk, for float and int8 alike."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # packed int8 params still go through TypedStorage
        torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def reference_inputs(model: nn.Module, seq_len: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(5, model.config.vocab_size, (1, seq_len), generator=generator),
            "attention_mask": torch.ones(1, seq_len, dtype=torch.long)}


@torch.no_grad()
def gflops(model: nn.Module, seq_len: int) -> float | None:
    """Forward FLOPs at batch 1 and `seq_len`, in GFLOPs; None for int8 models, whose kernels it cannot see."""
    if is_quantized(model):
        return None
    with FlopCounterMode(display=False) as counter:
        model.eval()(**reference_inputs(model, seq_len))
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def logits_on(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    model.eval()
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
    return task_of(model.config).output_logits(model(**inputs)).float()


def drift(model: nn.Module, logits: Tensor, previous: Tensor, reference: dict[str, Tensor]) -> float:
    """The largest logit change on the reference batch, over the rows the task reads (a token task: real tokens,
    never padding, whose outputs no loss or metric uses and an exact conversion may change)."""
    mask = reference.get("attention_mask")
    rows = None if mask is None else task_of(model.config).positions(None, mask)
    change = (logits - previous).abs()
    return float((change if rows is None else change[rows]).max())


def measure(step: str, model: nn.Module, *, seq_len: int, dev: DataLoader | None, reference: dict[str, Tensor],
            previous_logits: Tensor | None, previous_gflops: float | None) -> tuple[dict, Tensor]:
    """The report row for `model` after `step`, and its logits on the reference batch (for the next drift)."""
    logits = logits_on(model, reference)
    flops = gflops(model, seq_len)
    row = {"step": step, **parameter_counts(model), "size_mb": round(serialized_mb(model), 3),
           "gflops": round(flops if flops is not None else previous_gflops or 0.0, 4),
           "latency_ms": round(latency_ms(model, seq_len=seq_len, batch_size=1, runs=20, warmup=3), 2),
           "logit_drift": 0.0 if previous_logits is None else drift(model, logits, previous_logits, reference),
           "linear_sparsity": round(linear_sparsity(model), 4), "dtype": "qint8" if is_quantized(model) else str(float_dtype(model))}
    if dev is not None:
        metrics = evaluate(model, dev)
        row["metric_name"] = task_of(model.config).primary_metric
        row["metric"] = round(metrics[row["metric_name"]], 4)
    return row, logits
