"""Teacher and student wrappers over Hugging Face sequence classifiers.

Only this module knows how a model family lays out its layers and exposes its features;
losses see `Features` and nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from alembert.config import bounded
from alembert.tasks.base import Task
from alembert.tasks import task_of
from alembert.errors import fail
from alembert.families import FAMILIES, entry
from distill.cross_tokenizer import teacher_view
from distill.students import KINDS, Kind, kind_settings
from alembert.modeldir import MODEL_INPUTS, load_model_dir
from alembert.word_vocab import WordVocabConfig



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
    task: Task | None = None  # how logit-level terms reduce these logits (alembert.tasks); set from the model's config


# Per-layer Features fields -> (the forward_features flag that asks for them, the layer number at position 0 of
# the tuple: hidden_states[0] is the embedding output). A loss term's LossSpec says needs_<flag>.
LAYER_FIELDS = {"hidden_states": ("hidden", 0), "attentions": ("attentions", 1), "values": ("values", 1)}


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
    # a tokenizer of the student's own (a directory or hub name; distill.cross_tokenizer): the student gets its
    # vocabulary and learns new word embeddings (init=teacher still copies the layers); `words`: a word-level
    # vocabulary built from the transfer set (alembert.word_vocab, sized by `words`); null: the teacher's
    tokenizer: str | None = None
    words: WordVocabConfig = WordVocabConfig()
    # distill.students: transformer (the teacher's architecture, the fields above) | bilstm | cnn | static, with
    # `settings` parsed into that kind's settings dataclass (e.g. {hidden_size: 300} for bilstm)
    kind: str = "transformer"
    settings: dict[str, Any] = field(default_factory=dict)


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
        return forward_features(self.model, teacher_view(batch), hidden=hidden, attentions=attentions, values=values)


def forward_features(model: nn.Module, batch: dict[str, Tensor], *, hidden: bool = False,
                     attentions: bool = False, values: bool = False, forward: nn.Module | None = None) -> Features:
    """Run the model on a collated batch and package what the losses may need; `forward` is what runs it when that
    is a wrapper of `model` (DistributedDataParallel), which hooks and config are still read from."""
    if attentions and getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")  # sdpa gives no attention maps
    inputs = {key: value for key, value in batch.items() if key in MODEL_INPUTS}
    captured: list[Tensor] = []  # each value projection's output (a fused one's last third is the value)
    hooks = [module.register_forward_hook(lambda _m, _i, out: captured.append(out)) for module in value_projections(model)] if values else []
    try:
        output = (forward or model)(**inputs, output_hidden_states=hidden, output_attentions=attentions)
    finally:
        for hook in hooks:
            hook.remove()
    task = task_of(model.config)
    return Features(
        logits=task.output_logits(output),
        attention_mask=batch["attention_mask"],
        hidden_states=output.hidden_states if hidden else None,
        attentions=output.attentions if attentions else None,
        values=tuple(split_heads(value_part(model, v), model.config.num_attention_heads) for v in captured) if values else None,
        labels=batch.get("labels"),
        task=task,
    )


def in_fp32(features: Features | None) -> Features | None:
    """`features` with every reduced-precision tensor (from an autocast forward) cast to float32, differentiably."""
    if features is None:
        return None

    def up(value):
        if isinstance(value, tuple):
            return tuple(up(item) for item in value)
        if isinstance(value, Tensor) and value.dtype in (torch.bfloat16, torch.float16):
            return value.float()
        return value

    fields = ("logits", "hidden_states", "attentions", "values")
    return dataclasses.replace(features, **{name: up(getattr(features, name)) for name in fields})


def value_projections(model: nn.Module) -> list[nn.Module]:
    """Each layer's value projection, in forward order (an ALBERT group's shared one fires once per layer)."""
    suffix = entry(model).value_suffix
    modules = [module for name, module in model.named_modules() if name.endswith(suffix)]
    if not modules:
        raise fail(f"cannot find value projections ({suffix}) in a {model.config.model_type} model",
                   f"value-relation losses support {', '.join(FAMILIES.names())}")
    return modules


def value_part(model: nn.Module, projected: Tensor) -> Tensor:
    """The value channels of a value projection's output: all of them, or the last third of a fused QKV's."""
    return projected.chunk(3, dim=-1)[2] if entry(model).fused_qkv else projected


def split_heads(projected: Tensor, num_heads: int) -> Tensor:
    """A value Linear's output (batch, seq, heads*head_dim) -> (batch, heads, seq, head_dim), for Features.values."""
    batch, seq, width = projected.shape
    return projected.view(batch, seq, num_heads, width // num_heads).transpose(1, 2)


def disable_attention_dropout(model: nn.Module) -> None:
    """Attention losses must see clean maps: transformers returns them after dropout in train mode."""
    suffix = entry(model).attention_suffix
    for name, module in model.named_modules():
        if name.endswith(suffix) and isinstance(getattr(module, "dropout", None), nn.Dropout):
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


def student_config(teacher_config: PretrainedConfig, config: StudentConfig, tokenizer=None) -> PretrainedConfig:
    """The teacher's config with the student's sizes; everything else (vocab, labels, family) is kept, and per-layer
    settings (ModernBERT's attention pattern) are those of the teacher layers the student starts from. A student
    `tokenizer` of its own sets the vocabulary size and special-token ids."""
    cfg = copy.deepcopy(teacher_config)
    if tokenizer is not None:
        cfg.vocab_size = len(tokenizer)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
            if hasattr(cfg, name) and getattr(tokenizer, name, None) is not None:
                setattr(cfg, name, getattr(tokenizer, name))
    if config.num_layers < 1:
        raise fail(f"student.num_layers={config.num_layers} must be at least 1", "set student.num_layers=2 or more")
    layers = config.teacher_layers or default_teacher_layers(teacher_config.num_hidden_layers, config.num_layers)
    if len(layers) == config.num_layers and all(0 <= layer < teacher_config.num_hidden_layers for layer in layers):
        FAMILIES[cfg.model_type].keep_layers(cfg, list(layers))  # init_from_teacher names a bad list in one line
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
        setattr(cfg, FAMILIES[cfg.model_type].ffn_key, config.intermediate_size)
    return cfg


def build_student(teacher: PreTrainedModel, config: StudentConfig, tokenizer=None, *, teacher_tokenizer=None) -> PreTrainedModel:
    """Build a student of `config.kind` (distill.students), at random, from the teacher, or from a directory; with a
    `tokenizer` of its own, in its vocabulary (the word embeddings are then learnt, not copied). `teacher_tokenizer`
    is the teacher's (a static student's init encodes tokens with it)."""
    if config.init not in ("teacher", "random"):
        return load_model_dir(config.init)
    return KINDS.get(config.kind).build(teacher, config, kind_settings(config), tokenizer, teacher_tokenizer=teacher_tokenizer)


@dataclass(frozen=True)
class NoSettings:
    """A transformer student is sized by StudentConfig's own fields."""


def transformer_student(teacher: PreTrainedModel, config: StudentConfig, settings: NoSettings, tokenizer=None, *,
                        teacher_tokenizer=None) -> PreTrainedModel:
    """The teacher's architecture with the student's sizes, initialised from `teacher_layers`."""
    cfg = student_config(teacher.config, config, tokenizer)
    student = task_of(cfg).model_class.from_config(cfg, attn_implementation=entry(teacher).attention)
    if config.init == "teacher":
        layers = config.teacher_layers or default_teacher_layers(teacher.config.num_hidden_layers, config.num_layers)
        init_from_teacher(student, teacher, tuple(layers), word_embeddings=tokenizer is None)
    return student


KINDS.add("transformer", Kind(NoSettings, transformer_student, layered=True))


def init_from_teacher(student: PreTrainedModel, teacher: PreTrainedModel, layers: tuple[int, ...], *,
                      word_embeddings: bool = True) -> None:
    """Copy the embeddings (the word table only with `word_embeddings`), the head and the chosen teacher layers
    (student layer i <- teacher layer layers[i])."""
    n_teacher = teacher.config.num_hidden_layers
    if len(layers) != student.config.num_hidden_layers:
        raise fail(f"student.teacher_layers lists {len(layers)} layers for a {student.config.num_hidden_layers}-layer student",
                   "give exactly one teacher layer per student layer")
    bad = [layer for layer in layers if not 0 <= layer < n_teacher]
    if bad:
        raise fail(f"student.teacher_layers names layers {bad} but the teacher has layers 0..{n_teacher - 1}",
                   f"pick layers between 0 and {n_teacher - 1}")
    source = teacher.state_dict()
    if not word_embeddings:  # another vocabulary: the student learns its own table
        table = teacher.get_input_embeddings().weight
        source = {key: value for key, value in source.items() if value.data_ptr() != table.data_ptr()}
    target = student.state_dict()
    pattern = layer_key(teacher)
    for key, value in source.items():
        mapped = _student_key(key, layers, pattern)
        if mapped is None or mapped not in target:
            continue
        if target[mapped].shape != value.shape:
            raise fail(f"cannot copy teacher weight {key} {tuple(value.shape)} into the student's {tuple(target[mapped].shape)}",
                       "init from the teacher needs the teacher's hidden, head and FFN sizes; use student.init=random")
        target[mapped] = value.clone()
    student.load_state_dict(target)


def layer_key(model: nn.Module) -> re.Pattern | None:
    """State-dict keys of the family's layer list: `<prefix><layers>.<index><rest>` (None: no per-layer list)."""
    layers = entry(model).layers
    if layers is None:
        return None
    return re.compile(rf"^(?P<prefix>(?:.*\.)?{re.escape(layers)}\.)(?P<index>\d+)(?P<rest>\..*)$")


def _student_key(teacher_key: str, layers: tuple[int, ...], pattern: re.Pattern | None) -> str | None:
    match = pattern.match(teacher_key) if pattern is not None else None
    if match is None:
        return teacher_key
    index = int(match["index"])
    if index not in layers:
        return None
    return f"{match['prefix']}{layers.index(index)}{match['rest']}"
