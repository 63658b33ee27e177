"""Task-agnostic distillation on raw text, as DistilBERT does it: a masked-LM student learns from an MLM teacher.

The pieces plug into the usual machinery rather than beside it:
- `read_corpus` reads unlabeled text (one sentence per line, or a column of a CSV/TSV/JSONL file or hub dataset);
- `mlm_loader` tokenises it and masks each batch afresh (dynamic masking, so every epoch sees new masks,
  drawn from (seed, epoch, rows) so that a resumed run masks as an uninterrupted one);
- the loss terms `mlm` and `mlm_kd` live in `distill/terms/mlm.py`, registered like `kd`: with an MLM model,
  `Features.logits` are (batch, seq, vocab) and `Features.labels` are the MLM labels (-100 where unmasked);
- `distil_mlm` builds a shallower student from alternate teacher layers and trains it with the engine's `fit`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from transformers import AutoModelForMaskedLM, PreTrainedModel

from alembert.data import DataConfig, read_table
from distill import engine  # the module, not its names: distill.losses may import this module while engine loads
from alembert.config import bounded
from alembert.families import entry
from alembert.errors import atomic_dir, fail
from distill.losses import LOSSES, soft_targets
from alembert.modeldir import MODEL_INPUTS, _from_pretrained, load_tokenizer, resolve_source
from distill.models import (StudentConfig, Teacher, default_teacher_layers, disable_attention_dropout,
    init_from_teacher, student_config)

if TYPE_CHECKING:
    from distill.recipes import TermConfig

IGNORE = -100  # the label cross-entropy skips: positions that were not masked
TEXT_SUFFIXES = ("", ".txt", ".text")
# Terms that read a classifier's logits and task labels, which raw text has neither of.
# DistilBERT's published mix (Sanh et al. 2019): 5 x soft targets at T=2, 2 x MLM, 1 x hidden-state cosine.
# (name, weight, params), as alembert/conf/recipe/distilbert_mlm.yaml lists them.
DISTILBERT_MLM_TERMS = (
    ("mlm_kd", 5.0, {"temperature": 2.0}),
    ("mlm", 2.0, {}),
    ("distilbert_cos", 1.0, {"layers": "last_k", "k": 1}),
)


@dataclass(frozen=True)
class CorpusConfig:
    """Where the raw text comes from.

    Without `column`, `path` is a text file with one sentence per line (blank lines skipped). With `column`,
    `path` is a .csv/.tsv/.jsonl file (or, when no such file exists, a hub dataset name read at `hub_split`).
    """

    path: str | None = None  # None: no corpus, the run distils on a labelled task as usual
    column: str | None = None
    header: bool = True
    max_lines: int | None = bounded(None, low=1)
    hub_split: str = "train"


@dataclass(frozen=True)
class MaskingConfig:
    """BERT's masking: `probability` of the real non-special tokens are chosen; of those, `mask_ratio` become
    [MASK], `random_ratio` a random token, and the rest stay as they are (but are still predicted)."""

    probability: float = bounded(0.15, above=0.0, high=1.0)
    mask_ratio: float = bounded(0.8, low=0.0, high=1.0)
    random_ratio: float = bounded(0.1, low=0.0, high=1.0)
    max_length: int = bounded(128, low=2)

    def __post_init__(self):
        if not 0.0 < self.probability <= 1.0:
            raise fail(f"masking.probability={self.probability} is outside (0, 1]", "use BERT's 0.15")
        if self.mask_ratio < 0 or self.random_ratio < 0 or self.mask_ratio + self.random_ratio > 1.0:
            raise fail(f"masking.mask_ratio={self.mask_ratio} and random_ratio={self.random_ratio} do not fit in [0, 1]",
                       "use non-negative ratios that sum to at most 1, e.g. 0.8 and 0.1")


# ---------------------------------------------------------------- corpus

def read_corpus(config: CorpusConfig) -> list[str]:
    """The corpus as a list of non-empty sentences."""
    if config.path is None:
        raise fail("no corpus was given", "set corpus.path=/path/to/text.txt (one sentence per line)")
    path = Path(config.path).expanduser()
    if config.column is None:
        if not path.is_file():
            raise fail(f"corpus file {path} does not exist", "give a text file with one sentence per line")
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise fail(f"corpus file {path} is not plain text", "set the corpus column to read a column of a .csv/.tsv/.jsonl file")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    elif path.is_file():
        # read_table wants a label column; naming the text column twice reads the text alone, with its checks.
        table = DataConfig(text_column=config.column, label_column=config.column, header=config.header)
        lines = [str(text).strip() for text, _, _ in read_table(path, table)]
    else:
        lines = [str(text).strip() for text in _hub_column(config)]
    lines = [line for line in lines if line][: config.max_lines]
    if not lines:
        raise fail(f"the corpus {config.path} has no text", "give a corpus with at least one non-empty line")
    return lines


def _hub_column(config: CorpusConfig) -> list:
    import datasets

    try:
        table = datasets.load_dataset(config.path, split=config.hub_split)
    except Exception as err:  # datasets raises many types for "offline" and "no such dataset"
        raise fail(f"{config.path} is not a file and could not be loaded as a hub dataset ({type(err).__name__})",
                   "give a local .txt/.csv/.tsv/.jsonl corpus file") from None
    if config.column not in table.column_names:
        raise fail(f"the dataset {config.path} has no column {config.column} (it has {', '.join(table.column_names)})",
                   "set the corpus column to one of those")
    return table[config.column]


# ---------------------------------------------------------------- masking

def encode_corpus(texts: list[str], tokenizer, max_length: int) -> list[dict]:
    """Tokenise with special tokens and truncation; masking happens per batch, in the collate."""
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    keys = [k for k in (*MODEL_INPUTS, "special_tokens_mask") if k in encoded]
    return [{**{k: encoded[k][i] for k in keys}, "index": i} for i in range(len(texts))]


def mask_tokens(input_ids: Tensor, maskable: Tensor, *, mask_id: int, random_ids: Tensor, config: MaskingConfig,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return (masked input ids, labels). Labels hold the original id at chosen positions and -100 elsewhere.

    Every row with a maskable token gets at least one chosen position: short sentences would otherwise often
    give no training signal (and a batch with none would give a NaN loss).
    """
    chosen = (torch.rand(input_ids.shape, generator=generator) < config.probability) & maskable
    empty = ~chosen.any(dim=1) & maskable.any(dim=1)
    if empty.any():
        scores = torch.rand(input_ids.shape, generator=generator).masked_fill(~maskable, -1.0)
        chosen[empty, scores[empty].argmax(dim=1)] = True
    labels = input_ids.masked_fill(~chosen, IGNORE)
    draw = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (draw < config.mask_ratio)
    to_random = chosen & (draw >= config.mask_ratio) & (draw < config.mask_ratio + config.random_ratio)
    masked = input_ids.masked_fill(to_mask, mask_id)
    replacement = random_ids[torch.randint(len(random_ids), input_ids.shape, generator=generator)]
    masked = torch.where(to_random, replacement, masked)
    return masked, labels


class MaskedRows(Dataset):
    """Encoded corpus rows that know the epoch (the engine calls `set_epoch`), so the collate can mask by epoch."""

    def __init__(self, rows: list[dict]):
        self.rows, self.epoch = rows, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {**self.rows[index], "epoch": self.epoch}  # in the row, so loader worker processes see it too

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def batch_generator(seed: int, rows: list[dict]) -> torch.Generator:
    """A generator seeded by (seed, epoch, the batch's row indices).

    A generator that ran on from batch to batch would make a batch's masks depend on every batch drawn before
    it, which a resumed run skips without drawing; this way a resumed run masks exactly as an uninterrupted one,
    and each epoch still sees new masks.
    """
    key = repr((seed, rows[0].get("epoch", 0), [r["index"] for r in rows])).encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1)


def make_mlm_collate(tokenizer, config: MaskingConfig, seed: int):
    """Pad rows to the batch's longest and mask them; the masks are a function of seed, epoch and rows."""
    if tokenizer.mask_token_id is None:
        raise fail("the tokenizer has no mask token", "masked-LM distillation needs a BERT-style tokenizer with [MASK]")
    pad_id = tokenizer.pad_token_id or 0
    special = set(tokenizer.all_special_ids)
    random_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special])

    def collate(rows: list[dict]) -> dict[str, Tensor]:
        generator = batch_generator(seed, rows)
        width = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for key, pad in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0), ("special_tokens_mask", 1)):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] + [pad] * (width - len(r[key])) for r in rows], dtype=torch.long)
        maskable = (batch.pop("special_tokens_mask") == 0) & (batch["attention_mask"] == 1)
        batch["input_ids"], batch["labels"] = mask_tokens(batch["input_ids"], maskable, mask_id=tokenizer.mask_token_id,
                                                          random_ids=random_ids, config=config, generator=generator)
        batch["index"] = torch.tensor([r["index"] for r in rows], dtype=torch.long)
        return batch

    return collate


def mlm_loader(texts: list[str], tokenizer, *, batch_size: int, masking: MaskingConfig = MaskingConfig(),
               shuffle: bool = True, seed: int = 0) -> DataLoader:
    rows = MaskedRows(encode_corpus(texts, tokenizer, masking.max_length))
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                      collate_fn=make_mlm_collate(tokenizer, masking, seed))


# ---------------------------------------------------------------- loss terms

# ---------------------------------------------------------------- models

def load_masked_lm(source: str) -> PreTrainedModel:
    """Load a model with its masked-LM head; a checkpoint without one (a classifier, an ELECTRA discriminator) is refused."""
    model, info = _from_pretrained(AutoModelForMaskedLM.from_pretrained, source, output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"]:
        kind = ", ".join(getattr(model.config, "architectures", None) or ["unknown architecture"])
        raise fail(f"the model in {source} ({kind}) has no trained masked-LM head",
                   "use a checkpoint saved with its MLM head (e.g. BertForMaskedLM / bert-base-uncased), "
                   "not a fine-tuned classifier; the packaged MiniLM has none")
    return model


def build_mlm_student(teacher: PreTrainedModel, config: StudentConfig) -> PreTrainedModel:
    """A masked-LM student: fewer layers, initialised from alternate teacher layers (DistilBERT), at random, or from a directory."""
    if config.init not in ("teacher", "random"):
        return load_masked_lm(resolve_source(config.init))
    student = AutoModelForMaskedLM.from_config(student_config(teacher.config, config), attn_implementation=entry(teacher).attention)
    if config.init == "teacher":
        layers = config.teacher_layers or default_teacher_layers(teacher.config.num_hidden_layers, config.num_layers)
        init_from_teacher(student, teacher, tuple(layers))  # the MLM head comes with the embeddings
    return student


@torch.no_grad()
def masked_token_kl(student: PreTrainedModel, teacher: PreTrainedModel, data: DataLoader, temperature: float = 1.0) -> float:
    """Mean KL(teacher || student) over the masked tokens of `data`: how closely the student matches the teacher."""
    was_training = student.training
    student.eval()
    total, count = 0.0, 0
    for batch in data:
        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
        chosen = batch["labels"] != IGNORE
        s_logits, t_logits = student(**inputs).logits[chosen], teacher(**inputs).logits[chosen]
        total += float(soft_targets(s_logits, t_logits, temperature, scale_by_t2=False)) * int(chosen.sum())
        count += int(chosen.sum())
    student.train(was_training)
    return total / max(count, 1)


# ---------------------------------------------------------------- the job

def distil_mlm(teacher_source: str, student: StudentConfig | PreTrainedModel, corpus: CorpusConfig | list[str],
               train_config: engine.TrainConfig, *, terms: tuple[TermConfig, ...] | None = None,
               masking: MaskingConfig = MaskingConfig(), out_dir: str | Path | None = None,
               teacher: PreTrainedModel | None = None,
               checkpoint_dir: str | Path | None = None) -> tuple[PreTrainedModel, engine.History]:
    """Distil an MLM teacher into a shallower MLM student on raw text; save it to `out_dir` when given.

    `checkpoint_dir` is where train_config.checkpoint_every / resume write and read (see engine.fit).

    `terms` default to DistilBERT's (mlm_kd, mlm, distilbert_cos); the cosine term is dropped when the student
    is narrower than the teacher. The teacher cache is turned off: masks change every batch. `teacher` is an
    already loaded MLM teacher, used instead of loading one from `teacher_source` (the tokenizer still comes from there).
    """
    # Imported here: recipes imports distill.terms, whose mlm module imports this one.
    from distill.recipes import StageConfig, TermConfig, stage_objective

    task_terms = sorted({t.name for t in terms or () if LOSSES[t.name].classifier_only})
    if task_terms:
        raise fail(f"the term(s) {task_terms} need a labelled task, not raw text",
                   "use recipe=distilbert_mlm (mlm_kd, mlm, distilbert_cos) for masked-LM distillation")
    source = resolve_source(teacher_source)
    tokenizer = load_tokenizer(source)
    teacher_model = teacher if teacher is not None else load_masked_lm(source)
    texts = read_corpus(corpus) if isinstance(corpus, CorpusConfig) else list(corpus)
    if not texts:
        raise fail("the corpus has no text", "give at least one sentence")
    engine.seed_everything(train_config.seed)
    student_model = student if isinstance(student, PreTrainedModel) else build_mlm_student(teacher_model, student)
    if terms is None:
        same_width = student_model.config.hidden_size == teacher_model.config.hidden_size
        terms = tuple(TermConfig(name, weight, dict(params)) for name, weight, params in DISTILBERT_MLM_TERMS
                      if same_width or name != "distilbert_cos")
    objective, extra_modules = stage_objective(StageConfig(name="mlm distil", terms=tuple(terms)),
                                               student_model.config, teacher_model.config)
    data = mlm_loader(texts, tokenizer, batch_size=train_config.batch_size, masking=masking, seed=train_config.seed)
    # The dev metric of `fit` is a task metric, which raw text has none of: train without dev and keep the last weights.
    if objective.needs_attentions:
        disable_attention_dropout(student_model)  # attention terms must see clean maps
    history = engine.fit(student_model, data, None, objective, replace(train_config, cache_teacher=False),
                         teacher=Teacher(teacher_model) if objective.needs_teacher else None, extra_modules=extra_modules,
                         keep_best=False, desc="mlm distil", checkpoint_dir=checkpoint_dir)
    if out_dir is not None:
        with atomic_dir(out_dir) as tmp:
            student_model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return student_model, history
