"""Corpora larger than memory: a line file read lazily, sharded across DDP ranks and DataLoader workers.

Line i of the file belongs to exactly one reader: rank i mod world size, and within it one DataLoader worker,
so in one epoch no rank (and no worker) sees an example another one sees, and none sees one twice.
Rows carry "index" = the line number, which is what the teacher-logit cache looks rows up by.

    dataset = LineDataset("train.jsonl", jsonl_task_encoder(tokenizer, 128, label_names=("neg", "pos")))
    train = stream_loader(dataset, tokenizer, batch_size=32, task=task_named("classification"), num_workers=2)
    fit(student, train, dev, objective, config, teacher=teacher)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distill import distributed
from alembert.data import make_collate
from alembert.tasks.base import Task
from alembert.errors import fail

LineEncoder = Callable[[int, str], "dict | None"]  # (line number, line) -> an encoded row, or None to skip the line


class LineDataset(IterableDataset):
    """Encoded rows of a text file, one per line, this reader's shard only; optionally shuffled in a bounded buffer."""

    def __init__(self, path: str | Path, encode_line: LineEncoder, *, shuffle_buffer: int = 0, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise fail(f"corpus file {self.path} does not exist", "check the path of the streamed corpus")
        self.encode_line, self.shuffle_buffer, self.seed, self.epoch = encode_line, shuffle_buffer, seed, 0
        # Fixed at construction (in the training process): DataLoader workers are not part of the process group.
        self.rank, self.world_size = (rank, world_size) if rank is not None else distributed.world()
        self._lines: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """A new shuffle order each epoch (the shards stay the same); the engine calls this."""
        self.epoch = epoch

    def shard(self) -> tuple[int, int]:
        """(this reader's shard, number of shards) over ranks x DataLoader workers."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        # worker-major, so that line i belongs to rank i mod world size whatever the worker count (and __len__ is exact)
        return worker * self.world_size + self.rank, self.world_size * workers

    def __iter__(self) -> Iterator[dict]:
        shard, shards = self.shard()
        rows = self._read(shard, shards)
        return self._shuffled(rows, shard) if self.shuffle_buffer > 1 else rows

    def _read(self, shard: int, shards: int) -> Iterator[dict]:
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if number % shards == shard:
                    row = self.encode_line(number, line)
                    if row is not None:
                        yield row

    def _shuffled(self, rows: Iterator[dict], shard: int) -> Iterator[dict]:
        """Reservoir-style buffer shuffle: memory stays at `shuffle_buffer` rows whatever the corpus size."""
        generator = random.Random(f"{self.seed}/{self.epoch}/{shard}")
        buffer: list[dict] = []
        for row in rows:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(row)
                continue
            slot = generator.randrange(len(buffer))
            yield buffer[slot]
            buffer[slot] = row
        generator.shuffle(buffer)
        yield from buffer

    def __len__(self) -> int:
        """Lines this rank reads (one pass to count them, done once): sets the schedule's length."""
        if self._lines is None:
            with self.path.open("rb") as handle:
                self._lines = sum(1 for _ in handle)
        return len(range(self.rank, self._lines, self.world_size))


def jsonl_task_encoder(tokenizer, max_length: int, *, label_names: tuple[str, ...] | None, text_column: str = "sentence",
                       text_pair_column: str | None = None, label_column: str = "label") -> LineEncoder:
    """Encode {"sentence": ..., "label": ...} lines; label_names=None for a regression target."""
    index = {name: i for i, name in enumerate(label_names or ())}

    def encode_line(number: int, line: str) -> dict | None:
        if not line.strip():
            return None
        try:
            record = json.loads(line)
            text, pair, label = record[text_column], record.get(text_pair_column) if text_pair_column else None, record[label_column]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise fail(f"line {number + 1} is not a JSON object with '{text_column}' and '{label_column}'",
                       "write one JSON object per line, or set the column names") from None
        if label_names is not None and str(label).strip() not in index:
            raise fail(f"line {number + 1}: label '{label}' is not one of {list(label_names)}", "fix the label or the label names")
        encoded = tokenizer(text, pair, truncation=True, max_length=max_length)
        row = {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}
        return {**row, "labels": index[str(label).strip()] if label_names is not None else float(label), "index": number}

    return encode_line


def stream_loader(dataset: LineDataset, tokenizer, *, batch_size: int, task: Task, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                      collate_fn=make_collate(tokenizer.pad_token_id or 0, task))
