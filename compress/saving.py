"""Saving and loading compressed models.

Every float model (pruned, shared, factorized, cast) is a plain save_pretrained directory that stock
Auto classes load. A dynamic-int8 model keeps config.json, the tokenizer and the label map, and
its int8 state dict in `model_int8.pt`; `load_compressed` rebuilds it from the recorded passes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from compress.families import HISTORY_KEY, is_quantized
from compress.quantize import quantize_linear_int8
from distill.errors import atomic_dir, fail
from distill.models import LABEL_FILE, load_model_dir, save_model

INT8_WEIGHTS = "model_int8.pt"


def save_compressed(model: nn.Module, tokenizer, out_dir: str | Path) -> Path:
    """Write `model` so that `load_compressed` (and, for float models, AutoModel*.from_pretrained) reads it back."""
    if getattr(model, "alembert_compact", False):
        raise fail("this model was compacted for export and its layers no longer match its config",
                   "save the model from before compact_for_export, and compact it again after loading")
    if not is_quantized(model):
        return save_model(model, tokenizer, out_dir)
    with atomic_dir(out_dir) as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        label_map = {"id2label": {str(k): v for k, v in model.config.id2label.items()}, "problem_type": model.config.problem_type}
        (tmp / LABEL_FILE).write_text(json.dumps(label_map, indent=2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # packed int8 params still go through TypedStorage
            torch.save(model.state_dict(), tmp / INT8_WEIGHTS)
    return Path(out_dir)


def load_compressed(model_dir: str | Path) -> nn.Module:
    """Load what `save_compressed` wrote: a stock model, or an int8 one rebuilt and re-quantized."""
    model_dir = Path(model_dir)
    if not (model_dir / INT8_WEIGHTS).is_file():
        return load_model_dir(model_dir).eval()
    config = AutoConfig.from_pretrained(model_dir)
    passes = [entry.get("pass") for entry in getattr(config, HISTORY_KEY, None) or []]
    if "quantize_dynamic" not in passes:
        raise fail(f"{model_dir} has {INT8_WEIGHTS} but its config records no quantize_dynamic pass",
                   "re-save the model with compress.saving.save_compressed")
    model = quantize_linear_int8(AutoModelForSequenceClassification.from_config(config).eval())
    # weights_only=False: packed int8 parameters are not plain tensors; only load files you wrote.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # packed int8 params still go through TypedStorage
        model.load_state_dict(torch.load(model_dir / INT8_WEIGHTS, weights_only=False))
    return model.eval()
