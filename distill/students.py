"""Student kinds: `student.kind` picks one registry entry, and `student.settings` are parsed into its settings.

`transformer` (distill/models.py) is the teacher's architecture with fewer layers. The small kinds
(alembert/students/) are Tang et al.'s BiLSTM, a TextCNN and a model2vec-style static student. They read only
logits, so a recipe with layer-wise terms is refused for them in one line. With student.init=teacher their word
vectors start from the teacher, reduced by PCA to `embedding_dim`: the teacher's input table for the BiLSTM and
the CNN, and for the static student, as model2vec does, the teacher's output vector of each token encoded alone.
A student with its own vocabulary (student.tokenizer, e.g. `words`) starts each token from the teacher's pieces
that spell it, averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from tqdm.auto import tqdm

from alembert.config import bounded, from_dict
from alembert.errors import fail
from alembert.registry import Registry
from alembert.students import MODELS, BiLstmConfig, CnnConfig, StaticConfig
from alembert.tasks import task_of

TOKEN_BATCH = 512  # tokens encoded at once for the static student's init


@dataclass(frozen=True)
class Kind:
    settings: type  # the frozen dataclass `student.settings` is parsed into
    # (teacher, StudentConfig, settings, student tokenizer or None, *, teacher_tokenizer) -> an untrained student
    # (student.init=teacher|random; a directory to load is distill.models.build_student's)
    build: Callable[..., PreTrainedModel]
    layered: bool = False  # has the teacher's layers, for layer-wise terms


KINDS: Registry[Kind] = Registry("student kind")


@dataclass(frozen=True)
class BiLstmSettings:
    embedding_dim: int | None = bounded(None, low=1)  # None: 300, or the teacher's width where narrower
    hidden_size: int = bounded(300, low=1)  # per direction
    head_size: int = bounded(400, low=1)
    dropout: float = bounded(0.1, low=0.0, high=0.9)


@dataclass(frozen=True)
class CnnSettings:
    embedding_dim: int | None = bounded(None, low=1)  # None: 300, or the teacher's width where narrower
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    filters: int = bounded(100, low=1)  # per kernel size
    head_size: int = bounded(400, low=1)
    dropout: float = bounded(0.1, low=0.0, high=0.9)

    def __post_init__(self):
        if not self.kernel_sizes or min(self.kernel_sizes) < 1:
            raise fail(f"student.settings.kernel_sizes={list(self.kernel_sizes)} needs at least one width of 1 or more",
                       "use e.g. [3, 4, 5]")


@dataclass(frozen=True)
class StaticSettings:
    embedding_dim: int | None = bounded(None, low=1)  # None: 256, or the teacher's width where narrower
    head_size: int = bounded(256, low=1)
    dropout: float = bounded(0.1, low=0.0, high=0.9)


def kind_settings(config) -> object:
    """`config.settings` (a StudentConfig's) as its kind's settings dataclass; a bad key or value is one line."""
    return from_dict(KINDS.get(config.kind).settings, dict(config.settings), path="student.settings.")


def check_student(config, *, layer_methods: tuple[str, ...]) -> None:
    """Before any model loads: the kind exists, its settings parse, and a small kind is asked for no method that
    needs transformer layers (`layer_methods` names those the run uses: layer-wise terms, module replacement, LayerDrop)."""
    kind = KINDS.get(config.kind)
    kind_settings(config)
    if not kind.layered and layer_methods:
        raise fail(f"student.kind={config.kind} has no transformer layers, but the run asks for {', '.join(layer_methods)}",
                   "use logit terms only (recipe=kd, or kd.soft_loss=logit_mse), or student.kind=transformer")


def _small(config_type: type, fields: tuple[str, ...], table: Callable[..., Tensor], width: int):
    """A builder for one small kind: its config from the teacher's labels and vocabulary, its word table from `table`,
    `width` wide (or the teacher's width where narrower) unless the settings name an embedding_dim."""

    def build(teacher: PreTrainedModel, config, settings, tokenizer=None, *, teacher_tokenizer=None) -> PreTrainedModel:
        task = task_of(teacher.config)
        if not task.one_output_per_text():
            raise fail(f"student.kind={config.kind} classifies whole texts, but the task is {task.name}",
                       "use student.kind=transformer for token and span tasks")
        student_cfg = config_type(
            vocab_size=len(tokenizer) if tokenizer is not None else teacher.config.vocab_size,
            pad_token_id=(tokenizer.pad_token_id if tokenizer is not None else teacher.config.pad_token_id) or 0,
            num_labels=teacher.config.num_labels, id2label=teacher.config.id2label, label2id=teacher.config.label2id,
            problem_type=teacher.config.problem_type, **{name: getattr(settings, name) for name in fields},
            embedding_dim=settings.embedding_dim or min(width, teacher.get_input_embeddings().embedding_dim))
        student = MODELS[config_type.model_type][1](student_cfg)
        if config.init == "teacher":
            pieces = None if tokenizer is None else teacher_pieces(tokenizer, teacher_tokenizer)
            with torch.no_grad():
                student.embeddings.weight.copy_(table(teacher, student_cfg.embedding_dim, teacher_tokenizer, pieces))
        return student

    return build


def pca(rows: Tensor, width: int, what: str) -> Tensor:
    """`rows` reduced to their `width` leading principal components (centred), in float32."""
    if width > rows.shape[1]:
        raise fail(f"student.settings.embedding_dim={width} is wider than the teacher's {rows.shape[1]}-wide {what}",
                   f"use at most {rows.shape[1]} (student.init=teacher reduces it by PCA), or student.init=random")
    centred = rows.double() - rows.double().mean(0)
    _, _, directions = torch.linalg.svd(centred, full_matrices=False)
    reduced = (centred @ directions[:width].T).float()
    # fewer rows than `width` (a small word vocabulary) have fewer components: the rest stay zero
    return torch.nn.functional.pad(reduced, (0, width - reduced.shape[1]))


def teacher_pieces(tokenizer, teacher_tokenizer) -> list[list[int]]:
    """For each token of the student's own vocabulary (in id order), the teacher ids that spell it: the teacher's own
    id where its vocabulary has the token (special tokens, whole words), else the pieces the teacher splits it into."""
    if teacher_tokenizer is None:
        raise fail("student.init=teacher with a student tokenizer needs the teacher's tokenizer",
                   "use student.init=random")
    teacher_vocab = teacher_tokenizer.get_vocab()
    unknown = [teacher_tokenizer.unk_token_id or 0]
    return [[teacher_vocab[token]] if token in teacher_vocab
            else teacher_tokenizer(token, add_special_tokens=False)["input_ids"] or unknown
            for token in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]


def input_table(teacher: PreTrainedModel, width: int, teacher_tokenizer, pieces: list[list[int]] | None = None) -> Tensor:
    """The teacher's input table by PCA; for a vocabulary of the student's own, each token's row is the mean of
    its teacher pieces' rows."""
    weight = teacher.get_input_embeddings().weight.detach()
    rows = weight if pieces is None else torch.stack([weight[ids].mean(0) for ids in pieces])
    return pca(rows, width, "word table")


@torch.no_grad()
def output_table(teacher: PreTrainedModel, width: int, teacher_tokenizer, pieces: list[list[int]] | None = None) -> Tensor:
    """model2vec's distillation: each token alone between the ids the teacher's tokenizer wraps a text in ([CLS]
    and [SEP], <s> and </s>); its output vector, averaged over its pieces for a vocabulary of the student's own."""
    first, last = _edge_ids(teacher_tokenizer)
    pieces = pieces if pieces is not None else [[token] for token in range(teacher.config.vocab_size)]
    encoder: nn.Module = teacher.base_model.eval()
    rows = []
    for start in tqdm(range(0, len(pieces), TOKEN_BATCH), desc="static init", leave=False):
        chunk = pieces[start:start + TOKEN_BATCH]
        longest = max(map(len, chunk))
        batch = torch.tensor([[first, *ids, last] + [last] * (longest - len(ids)) for ids in chunk])
        mask = torch.tensor([[1] * (len(ids) + 2) + [0] * (longest - len(ids)) for ids in chunk])
        hidden = encoder(input_ids=batch, attention_mask=mask).last_hidden_state[:, 1:longest + 1]
        inside = torch.tensor([[1.0] * len(ids) + [0.0] * (longest - len(ids)) for ids in chunk]).unsqueeze(-1)
        rows.append((hidden * inside).sum(1) / inside.sum(1))
    return pca(torch.cat(rows), width, "output")


def _edge_ids(tokenizer) -> tuple[int, int]:
    """The ids the tokenizer puts before and after a text: what an empty text encodes to."""
    ids = tokenizer("")["input_ids"] if tokenizer is not None else []
    if len(ids) != 2:
        raise fail("the static student's init needs the teacher's tokenizer to wrap a text in two special tokens "
                   f"(it gives {ids})", "use student.init=random for this teacher")
    return ids[0], ids[1]


SMALL_FIELDS = ("head_size", "dropout")
# 300-d word vectors as Tang et al.'s BiLSTM and the TextCNN read (word2vec's width); 256 as model2vec's default
KINDS.add("bilstm", Kind(BiLstmSettings, _small(BiLstmConfig, (*SMALL_FIELDS, "hidden_size"), input_table, 300)))
KINDS.add("cnn", Kind(CnnSettings, _small(CnnConfig, (*SMALL_FIELDS, "kernel_sizes", "filters"), input_table, 300)))
KINDS.add("static", Kind(StaticSettings, _small(StaticConfig, SMALL_FIELDS, output_table, 256)))
