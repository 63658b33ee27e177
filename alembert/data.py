"""Task data: local CSV/TSV/JSONL files (distill/tables.py), hub or save_to_disk datasets, or the built-in
demo task, tokenised for training.

Rows are validated while loading so that a wrong column, a stray label or an empty file is
reported in one line before any model is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from alembert.batching import LengthSortedSampler, row_lengths
from alembert.demo import DemoConfig
from alembert.masking import MaskingConfig
from alembert.config import bounded, one_of
from alembert.errors import fail
from alembert.tasks import TASKS, task_named
from alembert.tasks.base import Task, make_collate
from alembert.tables import read_table, read_texts

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class DataConfig:
    """Where the task comes from and how its columns are named.

    `task` is "demo" (built in), "files" (the train/dev/test paths), a directory written by
    `DatasetDict.save_to_disk`, or a hub dataset name. Without a header, columns are named by
    position: text_column=0, label_column=1.
    """

    task: str | None = "demo"  # None: no task data (python -m compress and export run without it)
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    header: bool = True
    encoding: str = "utf-8"  # of the train/dev/test files, e.g. latin-1 or cp1252 for files saved by older tools
    label_all_subtokens: bool = False  # token tasks: tag every piece of a word, not only its first
    task_type: str = one_of("classification", TASKS.names)  # a registered task (alembert/tasks/)
    max_length: int = bounded(128, low=2)  # room for [CLS] and [SEP] at least
    doc_stride: int = bounded(128, low=0)  # question answering: tokens consecutive windows of a long context share
    max_answer_length: int = bounded(30, low=1)  # question answering: the longest answer span, in tokens
    max_train_examples: int | None = bounded(None, low=1)
    # Semi-supervised: only the first N training examples keep their labels. The teacher fine-tunes and the no-KD
    # baseline trains on them; distillation reads every training example, through soft targets only.
    labelled_examples: int | None = bounded(None, low=1)
    # A file of unlabelled texts the teacher labels: one text per line (.txt), or the text column(s) of a .csv, .tsv
    # or .jsonl. Its examples join the transfer set after the training examples; distillation reads them through
    # soft targets only, while the teacher and the no-KD baseline learn from the training set alone.
    transfer: str | None = None
    max_dev_examples: int | None = bounded(None, low=1)  # the first N of dev: cheaper evaluations during training
    max_test_examples: int | None = bounded(None, low=1)  # the first N of test: a cheaper final evaluation
    hub_config: str | None = None
    hub_splits: tuple[str, str, str] = ("train", "validation", "test")
    demo: DemoConfig = DemoConfig()
    masking: MaskingConfig = MaskingConfig()  # masked_lm: how each batch is masked (alembert/masking.py)


@dataclass(frozen=True)
class Example:
    text: str | tuple[str, ...]  # a sentence, or its words for token tasks
    text_pair: str | None
    label: int | float | tuple[int, ...]  # one per sequence, or one per word


@dataclass(frozen=True)
class TaskData:
    """The loaded splits, their task, and the label names (None where the task has none, e.g. regression)."""

    splits: dict[str, list[Example]]
    label_names: tuple[str, ...] | None
    task: Task
    unlabelled: tuple[Example, ...] = ()  # data.transfer's examples, each with the task's stand-in label

    def transfer_examples(self) -> list[Example]:
        """What distillation reads: the training examples, then the unlabelled ones."""
        return [*self.splits["train"], *self.unlabelled]


def load_task(config: DataConfig, label_names: tuple[str, ...] | None = None) -> TaskData:
    """Load, validate and label-map every split. `label_names` fixes the label order (a trained head's)."""
    task = task_named(config.task_type)
    raw, declared = _load_raw(config)
    if not raw.get("train"):
        raise fail("the training set is empty", "give data.train a file with at least one row")
    if label_names is None:
        label_names = task.label_names(row[2] for row in raw["train"])
        label_names = declared if declared and label_names is not None else label_names
    splits = {name: _to_examples(name, rows, label_names, task) for name, rows in raw.items()}
    if config.max_train_examples is not None:
        splits["train"] = splits["train"][: config.max_train_examples]
    for split, most in (("dev", config.max_dev_examples), ("test", config.max_test_examples)):
        if most is not None and split in splits:
            splits[split] = splits[split][:most]
    return TaskData(splits=splits, label_names=label_names, task=task, unlabelled=_unlabelled_examples(config, task))


def _unlabelled_examples(config: DataConfig, task: Task) -> tuple[Example, ...]:
    """data.transfer's texts as examples of the task, each with its stand-in label (never read)."""
    if config.transfer is None:
        return ()
    label = task.stand_in_label()
    if label is None:
        raise fail(f"data.transfer does not work for the {task.name} task: an unlabelled text gives no word tags or "
                   "answer spans to distil", "drop data.transfer (it is for sequence classification and regression)")
    rows = read_texts(Path(config.transfer).expanduser(), config, "data.transfer file")
    if not rows:
        raise fail(f"data.transfer file {config.transfer} holds no text", "give a file with one text per line")
    if config.text_pair_column is not None and any(pair is None for _, pair, *_ in rows):
        raise fail(f"data.transfer file {config.transfer} has no second text, but the task reads sentence pairs",
                   f"give a .csv, .tsv or .jsonl with the columns {config.text_column} and {config.text_pair_column}")
    return tuple(Example(str(text).strip(), None if pair is None else str(pair), label) for text, pair, *_ in rows)


Raw = dict[str, list[tuple]]  # split -> (text, text_pair, label) rows, labels not yet mapped to ids


def _load_raw(config: DataConfig) -> tuple[Raw, tuple[str, ...] | None]:
    """The rows of each split, and the label names the source declares (a hub ClassLabel), if any."""
    task = task_named(config.task_type)
    if config.task == "demo":
        given = [split for split in SPLITS if getattr(config, split) is not None]
        if given:  # said, not ignored: the demo would silently train on generated rows instead of the user's file
            raise fail(f"data.{given[0]} is set but data.task=demo, which reads no files",
                       "add data.task=files to read data.train/dev/test")
        return task.demo_rows(config.demo), None
    if config.task == "files":
        paths = {"train": config.train, "dev": config.dev, "test": config.test}
        if paths["train"] is None:
            raise fail("data.task=files needs a training file", "set data.train=/path/to/train.tsv")
        return {split: task.read_file(Path(path), config) for split, path in paths.items() if path is not None}, None
    return _load_hub(config)


def _load_hub(config: DataConfig) -> tuple[Raw, tuple[str, ...] | None]:
    """The hub's (or a save_to_disk directory's) splits, with their ClassLabel names.

    GLUE-style test splits carry label -1 in every row: such a split is dropped with a printed note,
    so that run.py evaluates on the next split instead of scoring predictions against -1.
    """
    loaded = _open_dataset(config)
    found = ", ".join(loaded)
    raw, notes = {}, {}
    for split, hub_split in zip(SPLITS, config.hub_splits):
        if hub_split not in loaded:
            notes[split] = f"the dataset '{config.task}' has no split '{hub_split}' (it has {found})"
            continue
        rows, unlabelled = _hub_rows(loaded[hub_split], config, split, hub_split)
        if unlabelled:
            notes[split] = f"the {split} split ('{hub_split}') has no labels ({unlabelled})"
        else:
            raw[split] = rows
    if "train" not in raw:
        raise fail(notes["train"], "set data.hub_splits=[TRAIN,DEV,TEST] so that the first names a labelled split")
    for split, note in notes.items():
        tqdm.write(f"{note}; {_instead(split, raw)}")
    return raw, _class_names(loaded[config.hub_splits[0]], config)


def _instead(split: str, raw: Raw) -> str:
    if split == "test":
        return f"evaluating on {'dev' if 'dev' in raw else 'train'} instead"
    return "training runs without dev evaluations"


def _open_dataset(config: DataConfig):
    import datasets

    directory = Path(config.task).expanduser()
    if (directory / "dataset_dict.json").is_file() or (directory / "state.json").is_file():
        return _load_saved(directory, config)
    try:
        return datasets.load_dataset(config.task, config.hub_config)
    except Exception as err:  # datasets raises many types for "offline" and "no such dataset"
        where = f"the directory {directory}" if directory.is_dir() else f"the dataset '{config.task}' from the hub"
        raise fail(f"could not load {where} ({type(err).__name__})",
                   "save it with DatasetDict.save_to_disk where the hub is reachable and set data.task=/that/directory, "
                   "or use data.task=files with data.train/dev/test paths, or data.task=demo") from None


def _load_saved(directory: Path, config: DataConfig):
    import datasets

    try:
        loaded = datasets.load_from_disk(str(directory))  # local arrow files: never touches the network
    except Exception as err:  # a half-copied directory: missing arrow files or broken json
        detail = (str(err).splitlines() or [""])[0]
        raise fail(f"could not read the dataset saved in {directory} ({type(err).__name__}: {detail})",
                   "write it again with DatasetDict.save_to_disk, or use data.task=files with data.train/dev/test paths") from None
    if isinstance(loaded, datasets.Dataset):
        return {config.hub_splits[0]: loaded}  # a single split saved alone is the training set
    return loaded


def _hub_rows(table, config: DataConfig, split: str, hub_split: str) -> tuple[list[tuple], str | None]:
    """A split's (text, text_pair, label) rows with ClassLabel ids turned into names, or why it has no labels."""
    wanted = [config.text_column] + ([config.text_pair_column] if config.text_pair_column else [])
    if not task_named(config.task_type).labelled():  # the text is its own label (masked-LM)
        return _text_rows(table, config, hub_split), None
    wanted += [config.label_column] if split == "train" else []  # dev/test without labels are dropped, not errors
    missing = [column for column in wanted if column not in table.column_names]
    if missing:
        raise fail(f"the '{hub_split}' split of '{config.task}' has no column {', '.join(missing)} "
                   f"(it has {', '.join(table.column_names)})",
                   "set data.text_column / data.text_pair_column / data.label_column to its column names")
    if config.label_column not in table.column_names:
        return [], f"no column '{config.label_column}'"
    names = _class_names(table, config)
    labels = list(table[config.label_column])
    unlabelled = _unlabelled(labels, names, config, hub_split)
    if unlabelled:
        return [], unlabelled
    if names is not None:
        labels = [_named(label, names) for label in labels]
    texts = list(table[config.text_column])
    pairs = list(table[config.text_pair_column]) if config.text_pair_column else [None] * len(texts)
    return list(zip(texts, pairs, labels)), None


def _text_rows(table, config: DataConfig, hub_split: str) -> list[tuple]:
    if config.text_column not in table.column_names:
        raise fail(f"the '{hub_split}' split of '{config.task}' has no column {config.text_column} "
                   f"(it has {', '.join(table.column_names)})", "set data.text_column to its text column")
    return [(text, None, None) for text in table[config.text_column]]


def _unlabelled(labels: list, names: tuple[str, ...] | None, config: DataConfig, hub_split: str) -> str | None:
    """Why the split has no labels at all; a split with only some labels missing fails instead."""
    # None is always "no label"; -1 is the ClassLabel convention for it (GLUE's test splits).
    missing = [i for i, label in enumerate(labels) if label is None or (names is not None and label == -1)]
    if labels and all(label == -1 for label in labels):
        return "all -1"
    if labels and len(missing) == len(labels):
        return "all -1 or null"
    if missing:
        raise fail(f"the '{hub_split}' split of '{config.task}' has {len(missing)} of {len(labels)} rows without a label "
                   f"(-1 or null; the first is row {missing[0] + 1})",
                   "drop those rows (dataset.filter), save it with save_to_disk and set data.task=/that/directory")
    return None


def _class_names(table, config: DataConfig) -> tuple[str, ...] | None:
    """The ClassLabel names of the label column, or of its items for a sequence of ClassLabels (NER tags)."""
    import datasets

    feature = table.features.get(config.label_column)
    feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) / List(ClassLabel): the item's
    if not isinstance(feature, datasets.ClassLabel):
        return None
    return tuple(str(name) for name in feature.names)


def _named(label, names: tuple[str, ...]):
    if isinstance(label, (list, tuple)):
        return [names[item] for item in label]
    return names[label]

def _to_examples(split: str, rows: list[tuple], label_names, task: Task) -> list[Example]:
    if not rows:
        raise fail(f"the {split} set is empty", f"give data.{split} a file with at least one row")
    index = {name: i for i, name in enumerate(label_names or ())}
    examples = []
    for number, row in enumerate(rows, 1):
        where = row[3] if len(row) > 3 else f"{split} row {number}"  # a reader that knows the file line says it
        examples.append(Example(*task.parse_row(row[0], row[1], row[2], index, where)))
    return examples


def encode(data: TaskData, split: str, tokenizer, config: DataConfig) -> list[dict]:
    """A split's rows as the task encodes them (token ids, labels of the task's shape, and each row's "index")."""
    return data.task.encode(data.splits[split], tokenizer, config, data.label_names)


def loader(rows: list[dict], tokenizer, *, batch_size: int, task: Task, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    """Random batches for training (the engine re-orders them by length, see alembert.batching); otherwise rows
    shortest first, so each batch pads little (alembert.evaluate returns results in the rows' order)."""
    collate = task.collate_fn(rows, tokenizer, seed)
    lengths = None if shuffle else row_lengths(rows)
    if lengths is not None:
        return DataLoader(rows, batch_size=batch_size, sampler=LengthSortedSampler(lengths), collate_fn=collate)
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                      collate_fn=collate)


__all__ = ["DataConfig", "Example", "TaskData", "encode", "load_task", "loader", "make_collate", "read_table"]
