"""Task data: local CSV/TSV/JSONL files, hub datasets or the built-in demo task, tokenised for training.

Rows are validated while loading so that a wrong column, a stray label or an empty file is
reported in one line before any model is touched.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from distill.demo import DemoConfig, generate as generate_demo
from distill.errors import fail

SPLITS = ("train", "dev", "test")
TASK_TYPES = ("classification", "regression")


@dataclass(frozen=True)
class DataConfig:
    """Where the task comes from and how its columns are named.

    `task` is "demo" (built in), "files" (the train/dev/test paths) or a hub dataset name.
    Without a header, columns are named by position: text_column=0, label_column=1.
    """

    task: str = "demo"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    header: bool = True
    task_type: str = "classification"
    max_length: int = 128
    max_train_examples: int | None = None
    max_dev_examples: int | None = None  # the first N of dev: cheaper evaluations during training
    hub_config: str | None = None
    hub_splits: tuple[str, str, str] = ("train", "validation", "test")
    demo: DemoConfig = DemoConfig()


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None
    label: int | float


@dataclass(frozen=True)
class TaskData:
    """The loaded splits, with label names (None for regression)."""

    splits: dict[str, list[Example]]
    label_names: tuple[str, ...] | None
    task_type: str

    @property
    def regression(self) -> bool:
        return self.task_type == "regression"


def load_task(config: DataConfig, label_names: tuple[str, ...] | None = None) -> TaskData:
    """Load, validate and label-map every split. `label_names` fixes the label order (a trained head's)."""
    if config.task_type not in TASK_TYPES:
        raise fail(f"data.task_type={config.task_type} is unknown", f"use one of {', '.join(TASK_TYPES)}")
    raw = _load_raw(config)
    regression = config.task_type == "regression"
    if not raw.get("train"):
        raise fail("the training set is empty", "give data.train a file with at least one row")
    if not regression and label_names is None:
        label_names = _label_names(row[2] for row in raw["train"])
    splits = {name: _to_examples(name, rows, label_names, regression) for name, rows in raw.items()}
    if config.max_train_examples is not None:
        splits["train"] = splits["train"][: config.max_train_examples]
    if config.max_dev_examples is not None and "dev" in splits:
        splits["dev"] = splits["dev"][: config.max_dev_examples]
    return TaskData(splits=splits, label_names=label_names, task_type=config.task_type)


def _load_raw(config: DataConfig) -> dict[str, list[tuple]]:
    if config.task == "demo":
        generated = generate_demo(config.demo)
        return {split: [(r["sentence"], None, r["label"]) for r in rows] for split, rows in generated.items()}
    if config.task == "files":
        paths = {"train": config.train, "dev": config.dev, "test": config.test}
        if paths["train"] is None:
            raise fail("data.task=files needs a training file", "set data.train=/path/to/train.tsv")
        return {split: read_table(Path(path), config) for split, path in paths.items() if path is not None}
    return _load_hub(config)


def read_table(path: Path, config: DataConfig) -> list[tuple]:
    """Read (text, text_pair, label) rows from a .csv, .tsv, .jsonl or .json-lines file."""
    if not path.is_file():
        raise fail(f"data file {path} does not exist", "check data.train/data.dev/data.test")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = _read_jsonl(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        records = _read_delimited(path, "\t" if suffix in (".tsv", ".txt") else ",", config.header)
    else:
        raise fail(f"data file {path} has an unknown extension '{suffix}'", "use .csv, .tsv or .jsonl")
    if not records:
        raise fail(f"data file {path} has no rows", "give a file with at least one example")
    columns = [config.text_column, config.label_column] + ([config.text_pair_column] if config.text_pair_column is not None else [])
    missing = [str(c) for c in columns if str(c) not in records[0]]
    if missing:
        raise fail(f"data file {path} has no column {', '.join(missing)} (it has {', '.join(records[0])})",
                   "set data.text_column / data.text_pair_column / data.label_column, or data.header=false for positional columns")
    pair = str(config.text_pair_column) if config.text_pair_column is not None else None
    return [(r[str(config.text_column)], r[pair] if pair else None, r[str(config.label_column)]) for r in records]


def _read_delimited(path: Path, delimiter: str, header: bool) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL))
    rows = [row for row in rows if row]
    if header:
        if not rows:
            return []
        names, rows = rows[0], rows[1:]
    else:
        names = [str(i) for i in range(max((len(r) for r in rows), default=0))]
    return [dict(zip(names, row)) for row in rows]


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append({str(k): v for k, v in json.loads(line).items()})
            except (json.JSONDecodeError, AttributeError):
                raise fail(f"{path} line {number} is not a JSON object", "write one JSON object per line") from None
    return records


def _load_hub(config: DataConfig) -> dict[str, list[tuple]]:
    import datasets

    try:
        loaded = datasets.load_dataset(config.task, config.hub_config)
    except Exception as err:  # datasets raises many types for "offline" and "no such dataset"
        raise fail(f"could not load the dataset '{config.task}' from the hub ({type(err).__name__})",
                   "download it elsewhere and use data.task=files with data.train/dev/test paths, or data.task=demo") from None
    raw = {}
    for split, hub_split in zip(SPLITS, config.hub_splits):
        if hub_split in loaded:
            table = loaded[hub_split]
            pair = table[config.text_pair_column] if config.text_pair_column else [None] * len(table)
            raw[split] = list(zip(table[config.text_column], pair, table[config.label_column]))
    return raw


def _label_names(labels) -> tuple[str, ...]:
    names = {str(label).strip() for label in labels}
    try:
        return tuple(sorted(names, key=lambda name: float(name)))  # numeric labels keep numeric order
    except ValueError:
        return tuple(sorted(names))


def _to_examples(split: str, rows: list[tuple], label_names, regression: bool) -> list[Example]:
    if not rows:
        raise fail(f"the {split} set is empty", f"give data.{split} a file with at least one row")
    index = {name: i for i, name in enumerate(label_names or ())}
    examples = []
    for number, (text, pair, label) in enumerate(rows, 1):
        examples.append(Example(str(text), None if pair is None else str(pair),
                                _parse_label(label, index, regression, split, number)))
    return examples


def _parse_label(label, index: dict[str, int], regression: bool, split: str, number: int) -> int | float:
    if regression:
        try:
            value = float(label)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise fail(f"{split} row {number}: label '{label}' is not a finite number", "regression needs a float label in every row")
        return value
    key = str(label).strip()
    if key not in index:
        raise fail(f"{split} row {number}: label '{key}' is not one of the training labels {sorted(index)}",
                   "fix the label, or add examples of it to the training set")
    return index[key]


def encode(examples: list[Example], tokenizer, max_length: int) -> list[dict]:
    """Tokenise with truncation to `max_length`; padding happens per batch in `collate`."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    # "index" lets a teacher-logit cache look rows up after shuffling.
    return [{**{k: encoded[k][i] for k in keys}, "labels": e.label, "index": i} for i, e in enumerate(examples)]


def make_collate(pad_token_id: int, regression: bool):
    """Pad a list of encoded rows to the longest row of the batch."""
    label_dtype = torch.float32 if regression else torch.long

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for key, pad in (("input_ids", pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] + [pad] * (width - len(r[key])) for r in rows], dtype=torch.long)
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=label_dtype)
        batch["index"] = torch.tensor([r["index"] for r in rows], dtype=torch.long)
        return batch

    return collate


def loader(rows: list[dict], tokenizer, *, batch_size: int, regression: bool, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=make_collate(tokenizer.pad_token_id or 0, regression))


__all__ = ["DataConfig", "Example", "TaskData", "encode", "load_task", "loader", "read_table"]
