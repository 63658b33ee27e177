"""Saving and loading compressed models.

Every float model (pruned, shared, factorized, cast) is a plain save_pretrained directory that stock
Auto classes load. A dynamic-int8 model keeps config.json, the tokenizer and the label map, and its
weights in `model_int8.safetensors`: for each quantized Linear `<name>`, the tensors `<name>.int8_weight`
(int8), `<name>.int8_scale` (float64, one value), `<name>.int8_zero_point` (int64, one value) and, when
it has one, `<name>.int8_bias`; then every other tensor of the state dict (embeddings, LayerNorms, buffers)
under its own key. Only per-tensor weight quantization is stored: it is what `quantize_linear_int8` makes.
`load_compressed` rebuilds the float model from the config, re-applies the quantization, and sets the
stored values, so nothing in the file is unpickled and the logits are the same as before saving.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import safetensors.torch
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from transformers import AutoConfig

from alembert.families import HISTORY_KEY, is_quantized
from alembert.tasks import task_of
from compress.passes.quantize import quantize_linear_int8
from alembert.vocab import tokenizer_for
from alembert.errors import atomic_dir, fail
from alembert.modeldir import LABEL_FILE, load_model_dir, save_model

INT8_WEIGHTS = "model_int8.safetensors"
OLD_INT8_WEIGHTS = "model_int8.pt"  # the pickled format before safetensors: refused, since reading it can run code
INT8, SCALE, ZERO, BIAS = "int8_weight", "int8_scale", "int8_zero_point", "int8_bias"
RESAVE = "re-create it with python -m compress (or compress.saving.save_compressed) from the float model"


def save_compressed(model: nn.Module, tokenizer, out_dir: str | Path) -> Path:
    """Write `model` so that `load_compressed` (and, for float models, AutoModel*.from_pretrained) reads it back."""
    if getattr(model, "alembert_compact", False):
        raise fail("this model was compacted for export and its layers no longer match its config",
                   "save the model from before compact_for_export, and compact it again after loading")
    tokenizer = tokenizer_for(model, tokenizer)  # a vocabulary-pruned model is saved with its rewritten tokenizer
    if not is_quantized(model):
        return save_model(model, tokenizer, out_dir)
    tensors = int8_tensors(model)  # before atomic_dir: a refused model leaves nothing behind
    with atomic_dir(out_dir) as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        label_map = {"id2label": {str(k): v for k, v in model.config.id2label.items()}, "problem_type": model.config.problem_type}
        (tmp / LABEL_FILE).write_text(json.dumps(label_map, indent=2))
        safetensors.torch.save_file(tensors, tmp / INT8_WEIGHTS, metadata={"format": "pt"})
    return Path(out_dir)


def load_compressed(model_dir: str | Path) -> nn.Module:
    """Load what `save_compressed` wrote: a stock model, or an int8 one rebuilt and re-quantized."""
    model_dir = Path(model_dir)
    if (model_dir / OLD_INT8_WEIGHTS).is_file() and not (model_dir / INT8_WEIGHTS).is_file():
        raise fail(f"{model_dir / OLD_INT8_WEIGHTS} is an int8 model in the old pickled format, which is no longer "
                   "loaded because unpickling can run code", RESAVE)
    if not (model_dir / INT8_WEIGHTS).is_file():
        return load_model_dir(model_dir).eval()
    config = AutoConfig.from_pretrained(model_dir)
    passes = [entry.get("pass") for entry in getattr(config, HISTORY_KEY, None) or []]
    if "quantize_dynamic" not in passes:
        raise fail(f"{model_dir} has {INT8_WEIGHTS} but its config records no quantize_dynamic pass",
                   "re-save the model with compress.saving.save_compressed")
    model = quantize_linear_int8(task_of(config).model_class.from_config(config).eval())
    path = model_dir / INT8_WEIGHTS
    _set_int8_tensors(model, _read(path), path)
    return model.eval()


def int8_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of a dynamic-int8 model as a plain tensor, named as in model_int8.safetensors."""
    linears = _int8_linears(model)
    tensors = {}
    for name, linear in linears.items():
        weight, bias = linear.weight(), linear.bias()
        if weight.qscheme() != torch.per_tensor_affine:
            raise fail(f"the int8 layer {name} is quantized {weight.qscheme()}, which {INT8_WEIGHTS} cannot store",
                       "quantize with the quantize_dynamic pass, which quantizes each weight per tensor")
        tensors[f"{name}.{INT8}"] = weight.int_repr()
        tensors[f"{name}.{SCALE}"] = torch.tensor([weight.q_scale()], dtype=torch.float64)
        tensors[f"{name}.{ZERO}"] = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
        if bias is not None:
            tensors[f"{name}.{BIAS}"] = bias
    tensors.update(_float_tensors(model, linears))
    # safetensors refuses tensors that share memory (views, tied weights): each gets its own copy.
    return {key: value.detach().clone().contiguous() for key, value in tensors.items()}


def _int8_linears(model: nn.Module) -> dict[str, DynamicLinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, DynamicLinear)}


def _float_tensors(model: nn.Module, linears: dict) -> dict[str, torch.Tensor]:
    """The state dict less the int8 layers' entries (packed params, a dtype, and an unused output scale)."""
    owned = tuple(f"{name}." for name in linears)
    return {key: value for key, value in model.state_dict().items()
            if isinstance(value, torch.Tensor) and not key.startswith(owned)}


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path)
    except Exception as err:  # truncated or foreign: safetensors, OSError and others, depending on the damage
        raise fail(f"{path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})",
                   RESAVE) from None


def _set_int8_tensors(model: nn.Module, found: dict[str, torch.Tensor], path: Path) -> None:
    """Put the stored tensors into a freshly quantized model of the same config."""
    _check_matches(int8_tensors(model), found, path)
    linears = _int8_linears(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized tensor creation announces its deprecation
        for name, linear in linears.items():
            weight = torch._make_per_tensor_quantized_tensor(found[f"{name}.{INT8}"], float(found[f"{name}.{SCALE}"]),
                                                            int(found[f"{name}.{ZERO}"]))
            linear.set_weight_bias(weight, found.get(f"{name}.{BIAS}"))
    # A partial load_state_dict would fail in the int8 layers (they require their own keys), so the full state
    # dict, whose int8 entries now hold the stored weights, is loaded with the float tensors swapped in. It is
    # updated in place: its _metadata (module versions) tells the int8 layers which key layout to expect.
    state = model.state_dict()
    state.update({key: found[key] for key in _float_tensors(model, linears)})
    model.load_state_dict(state)


def _check_matches(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> None:
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        what = f"lacks {len(missing)} tensor(s) the config needs (first: {missing[0]})" if missing else \
            f"has {len(extra)} tensor(s) the config does not (first: {extra[0]})"
        raise fail(f"{path} {what}", RESAVE)
    for key, want in expected.items():
        got = found[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise fail(f"{path} holds {key} as {got.dtype} {list(got.shape)}, but the config needs "
                       f"{want.dtype} {list(want.shape)}", RESAVE)
