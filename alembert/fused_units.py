"""Heads and FFN neurons of families with fused projections: ModernBERT's one `Wqkv` for query, key and value, and
its gated `Wi`, whose output holds the input half and then the gate half of every neuron.

torch-pruning's tracer follows these graphs through unbind, rotary embeddings and chunk, but couples the wrong
channels (query channel c to output column c, whatever head and role it belongs to). So for these families the units
are described here instead, from the family's layout: head h owns rows s*H + h*d .. s*H + (h+1)*d of `Wqkv` for
s = query, key, value (H the hidden size, d the head width) and the same columns of the output projection; neuron j
owns rows j and I + j of `Wi` (I the FFN width) and column j of the FFN's output projection.

Importance follows torch-pruning's group importances: the sum over a unit's weights of w^2 (magnitude) or |w * dL/dw|
(first-order Taylor, gradients already accumulated), normalised by the layer's mean so that layers compare fairly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alembert.families import part, replace_part

QKV_SECTIONS = 3  # query, key, value, in that order along Wqkv's output


def _value(parameter: Tensor | None, importance: str) -> Tensor | None:
    if parameter is None:
        return None
    if importance == "taylor":
        grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        return (parameter.detach() * grad).abs()
    return parameter.detach().pow(2)


def _normalised(scores: Tensor) -> Tensor:
    mean = scores.mean()
    return scores / mean if mean > 0 else scores


def head_rows(hidden: int, head: int, width: int) -> list[int]:
    """Wqkv's output rows of one head: its query, key and value slices."""
    return [section * hidden + head * width + i for section in range(QKV_SECTIONS) for i in range(width)]


def head_scores(model: nn.Module, layer: nn.Module, importance: str) -> Tensor:
    """One score per head of `layer` over its Wqkv rows (and biases) and its output-projection columns."""
    heads, hidden = model.config.num_attention_heads, model.config.hidden_size
    width = hidden // heads
    qkv, out = part(model, layer, "qkv"), part(model, layer, "attention_out")
    rows_value, cols_value = _value(qkv.weight, importance).sum(dim=1), _value(out.weight, importance).sum(dim=0)
    bias = _value(qkv.bias, importance)
    if bias is not None:
        rows_value = rows_value + bias
    scores = [rows_value[head_rows(hidden, h, width)].sum() + cols_value[h * width:(h + 1) * width].sum() for h in range(heads)]
    return _normalised(torch.stack(scores).float())


def neuron_scores(model: nn.Module, layer: nn.Module, importance: str) -> Tensor:
    """One score per FFN neuron of `layer`: its input and gate rows of Wi and its column of the output projection."""
    inner, outer = part(model, layer, "ffn_in"), part(model, layer, "ffn_out")
    rows = _value(inner.weight, importance).sum(dim=1)
    bias = _value(inner.bias, importance)
    if bias is not None:
        rows = rows + bias
    width = inner.out_features // 2
    return _normalised((rows[:width] + rows[width:] + _value(outer.weight, importance).sum(dim=0)).float())


@torch.no_grad()
def zero_heads(model: nn.Module, layer: nn.Module, dead: list[int]) -> None:
    """Zero heads `dead` of `layer`: their Wqkv rows (and biases) and output-projection columns."""
    if not dead:
        return
    hidden = model.config.hidden_size
    width = hidden // model.config.num_attention_heads
    qkv, out = part(model, layer, "qkv"), part(model, layer, "attention_out")
    rows = torch.tensor([row for h in dead for row in head_rows(hidden, h, width)], dtype=torch.long)
    qkv.weight[rows] = 0
    if qkv.bias is not None:
        qkv.bias[rows] = 0
    out.weight[:, torch.tensor([h * width + i for h in dead for i in range(width)], dtype=torch.long)] = 0


def _linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


@torch.no_grad()
def keep_neurons(model: nn.Module, layer: nn.Module, keep: list[int], width: int | None = None) -> None:
    """Rebuild `layer`'s gated FFN with neurons `keep` only, then zero neurons up to `width` (None: no padding;
    a zero neuron adds act(0) * 0 = 0)."""
    inner, outer = part(model, layer, "ffn_in"), part(model, layer, "ffn_out")
    half = inner.out_features // 2
    index = torch.tensor(keep, dtype=torch.long)
    extra = (width or len(keep)) - len(keep)
    pad_rows = inner.weight.new_zeros(extra, inner.in_features)
    weight = torch.cat([inner.weight[index], pad_rows, inner.weight[index + half], pad_rows])
    bias = None
    if inner.bias is not None:
        pad = inner.bias.new_zeros(extra)
        bias = torch.cat([inner.bias[index], pad, inner.bias[index + half], pad])
    replace_part(model, layer, "ffn_in", _linear(weight, bias))
    out_weight = torch.cat([outer.weight[:, index], outer.weight.new_zeros(outer.out_features, extra)], dim=1)
    replace_part(model, layer, "ffn_out", _linear(out_weight, outer.bias))


def dead_neurons(model: nn.Module, layer: nn.Module) -> list[int]:
    """Neurons whose every weight is zero (padding), never the layer's last one."""
    alive = neuron_scores(model, layer, "magnitude")
    dead = [j for j in range(len(alive)) if alive[j] == 0]
    return dead[: len(alive) - 1]
