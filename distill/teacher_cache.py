"""The teacher cache: what an objective reads from a frozen teacher, computed in one pass and looked up by row.

Logits are kept per row as the task trims them (one distribution per sequence, or one per real token). The
per-layer features that layer-wise terms read (hidden states, attention maps, value projections) are kept only for
the layers the terms name, without padding, in fp16: in memory up to `CacheBudget.memory_gb`, else memory-mapped
from a temporary file (unlinked at once, so nothing is left behind) up to `disk_gb`. Beyond that, or when the disk
has no room, the teacher runs every step instead and the run says so in one line.

The cache is valid when the transfer set does not change between epochs (augmentation happens once, before
training) and the teacher is frozen in eval mode, so its features do not depend on the step.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from alembert.batching import LengthSortedSampler, row_lengths
from alembert.errors import fail
from alembert.tasks import task_of
from alembert.tasks.base import Task
from distill.distributed import gather_objects, is_main, world
from distill.models import LAYER_FIELDS, Features, Teacher
from distill.teacher_store import SUFFIX, load_rows, save_rows, store_key

GB = 1024 ** 3
# Per-layer Features field -> one row's shape, from its token count and the teacher's config.
ROW_SHAPES: dict[str, Callable[[int, object], tuple[int, ...]]] = {
    "hidden_states": lambda n, c: (n, c.hidden_size),
    "attentions": lambda n, c: (c.num_attention_heads, n, n),
    "values": lambda n, c: (c.num_attention_heads, n, c.hidden_size // c.num_attention_heads),
}


@dataclass(frozen=True)
class CacheBudget:
    """Where cached layer features may live: in memory up to `memory_gb`, memory-mapped on disk up to `disk_gb`
    (in `disk_dir`, or the system's temporary directory). TrainConfig's cache_* settings, validated there."""

    memory_gb: float = 4.0
    disk_gb: float = 32.0
    disk_dir: str | None = None

    @classmethod
    def of(cls, config) -> CacheBudget:
        return cls(config.cache_memory_gb, config.cache_disk_gb, config.cache_dir)


class _Rows:
    """One feature of one layer for every row, concatenated without padding in a flat fp16 buffer."""

    def __init__(self, buffer: np.ndarray, lengths: list[int], shape_of: Callable[[int], tuple[int, ...]]):
        self.buffer, self.lengths, self.shape_of = buffer, lengths, shape_of
        self.starts = np.concatenate([[0], np.cumsum([math.prod(shape_of(n)) for n in lengths])]).tolist()

    @staticmethod
    def size(lengths: list[int], shape_of: Callable[[int], tuple[int, ...]]) -> int:
        return sum(math.prod(shape_of(n)) for n in lengths)

    def put(self, position: int, row: Tensor) -> None:
        expected = self.shape_of(self.lengths[position])
        if tuple(row.shape) != expected:
            raise fail(f"the teacher gave a feature of shape {tuple(row.shape)} where the cache expected {expected}",
                       "set train.cache_teacher=false for this teacher, and report it")
        self.buffer[self.starts[position]:self.starts[position + 1]] = row.to(torch.float16).reshape(-1).numpy()

    def take(self, positions: list[int], width: int) -> Tensor:
        """The rows at `positions`, zero-padded to `width` tokens, as float32 (batch, *row shape at `width`)."""
        out = torch.zeros((len(positions), *self.shape_of(width)), dtype=torch.float32)
        for j, position in enumerate(positions):
            shape = self.shape_of(self.lengths[position])
            flat = torch.from_numpy(np.asarray(self.buffer[self.starts[position]:self.starts[position + 1]]))
            out[j][tuple(slice(0, d) for d in shape)] = flat.view(shape)
        return out


class FeatureStore:
    """The cached per-layer teacher features: (Features field, position in its tuple) -> the rows of that layer."""

    def __init__(self, rows: dict[tuple[str, int], _Rows], tuple_lengths: dict[str, int]):
        self.rows, self.tuple_lengths = rows, tuple_lengths

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(field for field, _ in self.rows)

    def features(self, fields, indices: list[int], width: int, device: torch.device) -> dict[str, tuple]:
        """Each asked field as the tuple Features holds, padded to `width`; layers no term reads are None."""
        return {field: tuple(self.rows[field, i].take(indices, width).to(device) if (field, i) in self.rows else None
                             for i in range(self.tuple_lengths[field]))
                for field in fields}


def plan_store(reads: dict[str, frozenset[int]], lengths: list[int], config, budget: CacheBudget
               ) -> tuple[FeatureStore | None, str]:
    """An empty store for `reads` (rows of `lengths` tokens) where the budget allows it, else None and why not."""
    shapes = {(field, i): (lambda n, field=field: ROW_SHAPES[field](n, config))
              for field, positions in reads.items() for i in sorted(positions)}
    sizes = {key: _Rows.size(lengths, shape_of) for key, shape_of in shapes.items()}
    total = sum(sizes.values())
    buffer, where = _allocate(total, budget)
    if buffer is None:
        return None, where
    rows, start = {}, 0
    for key, shape_of in shapes.items():
        rows[key] = _Rows(buffer[start:start + sizes[key]], lengths, shape_of)
        start += sizes[key]
    n_layers = config.num_hidden_layers
    return FeatureStore(rows, {field: n_layers + 1 - offset for field, (_, offset) in LAYER_FIELDS.items()}), where


def _allocate(total: int, budget: CacheBudget) -> tuple[np.ndarray | None, str]:
    """A flat fp16 buffer of `total` entries, in memory or memory-mapped; or None and the reason in one phrase."""
    size = f"{2 * total / GB:.2f} GB"
    if 2 * total <= budget.memory_gb * GB:
        return np.empty(total, dtype=np.float16), f"{size} in memory"
    if 2 * total > budget.disk_gb * GB:
        return None, f"they would take {size}, over train.cache_disk_gb={budget.disk_gb:g}"
    directory = Path(budget.disk_dir or tempfile.gettempdir()).expanduser()
    if not directory.is_dir():
        raise fail(f"train.cache_dir={directory} is not a directory", "create it, or set train.cache_dir=null (the temporary directory)")
    if shutil.disk_usage(directory).free < 2 * total + GB:
        return None, f"they would take {size} and {directory} has {shutil.disk_usage(directory).free / GB:.1f} GB free"
    # Unlinked as soon as it is mapped: nothing is left behind, even if the run is killed.
    with tempfile.NamedTemporaryFile(dir=directory, prefix="alembert-teacher-", suffix=".f16") as handle:
        try:  # reserve the blocks now: a full disk fails here, not as a bus error in the middle of training
            os.posix_fallocate(handle.fileno(), 0, 2 * total)
        except OSError as error:
            return None, f"{directory} could not hold {size} ({error.strerror})"
        buffer = np.memmap(handle, dtype=np.float16, mode="r+", shape=(total,))
    return buffer, f"{size} memory-mapped in {directory}"


class CachedTeacher:
    """Teacher outputs computed once over a dataset and looked up by each row's "index".

    Logits are stored ragged, one tensor per row without padding (the task trims them), and padded back to each
    batch's width on lookup; so are the layer features in `store`, when the objective reads some.
    """

    def __init__(self, rows: list[Tensor | None], task: Task, store: FeatureStore | None = None):
        self.rows, self.task, self.store = rows, task, store

    @classmethod
    def build(cls, teacher, data: DataLoader, device: torch.device, *, store: FeatureStore | None = None,
              batch_size: int | None = None) -> CachedTeacher:
        """One teacher pass over `data`'s rows, shortest first in batches of `batch_size` (default: `data`'s), on
        `device` (the teacher's); what it gives is kept on the CPU (logits move beside the student with `to`)."""
        task = task_of(teacher.model.config)
        lengths = None if isinstance(data.dataset, IterableDataset) else row_lengths(data.dataset)  # a stream: as it comes
        # Under torchrun each rank runs the teacher on every W-th row and the logits are gathered, so the pass costs
        # 1/W per rank. Layer features stay whole on every rank: gathering gigabytes of them would cost more.
        rank, size = world() if store is None and lengths is not None else (0, 1)
        ordered = data if lengths is None else DataLoader(
            data.dataset, batch_size=batch_size or data.batch_size, sampler=LengthSortedSampler(lengths).order[rank::size],
            collate_fn=data.collate_fn)
        asked = {LAYER_FIELDS[field][0]: True for field in (store.fields if store else ())}
        rows: dict[int, Tensor] = {}
        for batch in tqdm(ordered, desc="teacher cache", leave=False, dynamic_ncols=True, disable=not is_main()):
            with torch.inference_mode():
                features = teacher.features({key: value.to(device) for key, value in batch.items()}, **asked)
            mask = batch["attention_mask"]
            rows.update(zip(batch["index"].tolist(), task.trim(features.logits.float().cpu().clone(), mask)))
            if store is not None:
                _keep(store, features, batch["index"].tolist(), mask.sum(-1).tolist())
        if size > 1:
            rows = {index: row for shard in gather_objects(rows) for index, row in shard.items()}
        return cls([rows.get(i) for i in range(max(rows) + 1)], task, store)  # None: a row this rank never reads

    def to(self, device: torch.device) -> CachedTeacher:
        self.rows = [None if row is None else row.to(device) for row in self.rows]
        return self

    def features(self, batch: dict[str, Tensor], *, hidden: bool = False, attentions: bool = False,
                 values: bool = False) -> Features:
        wanted = {"hidden": hidden, "attentions": attentions, "values": values}
        asked = [field for field, (flag, _) in LAYER_FIELDS.items() if wanted[flag]]
        missing = sorted(set(asked) - (self.store.fields if self.store else frozenset()))
        if missing:
            raise fail(f"the teacher cache holds no {', '.join(missing)}",
                       "build it with a store for the objective's teacher_reads, or set train.cache_teacher=false")
        indices, width = batch["index"].tolist(), batch["input_ids"].shape[1]
        logits = self.task.pad([self.rows[i] for i in indices], width)
        layers = self.store.features(asked, indices, width, logits.device) if asked else {}
        return Features(logits=logits, attention_mask=batch["attention_mask"], labels=batch.get("labels"),
                        task=self.task, **layers)


def _keep(store: FeatureStore, features: Features, indices: list[int], lengths: list[int]) -> None:
    for (field, position), rows in store.rows.items():
        batch = getattr(features, field)[position].float().cpu()
        for j, (index, length) in enumerate(zip(indices, lengths)):
            rows.put(index, batch[j][tuple(slice(0, d) for d in rows.shape_of(int(length)))])


def cache_teacher(teacher, data: DataLoader, device: torch.device, reads: dict[str, frozenset[int]],
                  budget: CacheBudget, *, batch_size: int, say: Callable[[str], None], keep_in: str | None = None):
    """`teacher` with what the objective reads from it (`reads`: Objective.teacher_reads) cached over `data`'s rows;
    `teacher` itself, said in one line, when the layer features would not fit `budget`. With `keep_in` (a directory:
    train.teacher_store), logits alone are read from there when an earlier run stored them, and stored otherwise."""
    if keep_in is not None and not reads and _storable(teacher, data):
        return _stored(teacher, data, device, batch_size, say, keep_in)
    store = None
    if reads:
        lengths = _lengths_by_index(data.dataset)
        if lengths is None:
            say("teacher cache: the rows are streamed or carry no token ids, so layer features are not cached; "
                "the teacher runs every step")
            return teacher
        store, where = plan_store(reads, lengths, teacher.model.config, budget)
        if store is None:
            say(f"teacher cache: the teacher's layer features are not cached: {where}; the teacher runs every step")
            return teacher
        say(f"teacher cache: logits and {len(store.rows)} layer features of the teacher, {where}")
    # attention maps grow with the square of the length: those passes keep the training batch size
    size = data.batch_size if reads.get("attentions") else max(batch_size, data.batch_size or 1)
    return CachedTeacher.build(teacher, data, device, store=store, batch_size=size).to(device)


def _storable(teacher, data: DataLoader) -> bool:
    """One plain teacher, one process, rows held in memory: what a stored entry's key can describe."""
    return type(teacher) is Teacher and world()[1] == 1 and _lengths_by_index(data.dataset) is not None


def _stored(teacher, data: DataLoader, device: torch.device, batch_size: int, say: Callable[[str], None],
            directory: str) -> CachedTeacher:
    key = store_key(teacher, data.dataset, device)
    rows = load_rows(directory, key)
    if rows is not None:
        say(f"teacher cache: logits of {sum(row is not None for row in rows)} rows read from the teacher store "
            f"({Path(directory).expanduser() / key}{SUFFIX})")
        return CachedTeacher(rows, task_of(teacher.model.config)).to(device)
    cached = CachedTeacher.build(teacher, data, device, batch_size=max(batch_size, data.batch_size or 1))
    say(f"teacher cache: logits stored for later runs in {save_rows(directory, key, cached.rows)}")
    return cached.to(device)


def _lengths_by_index(rows) -> list[int] | None:
    """Each row's token count at its "index" (0 where no row has that index); None for a stream."""
    if isinstance(rows, IterableDataset):
        return None
    try:
        pairs = [(int(row["index"]), len(row["input_ids"])) for row in rows]
    except (TypeError, KeyError, IndexError):
        return None
    if not pairs:
        return None
    lengths = [0] * (max(index for index, _ in pairs) + 1)
    for index, length in pairs:
        lengths[index] = length
    return lengths
