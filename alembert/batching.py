"""Length-aware batch order: less padding, the same rows.

Training: rows are shuffled, cut into large buckets of `bucket_batches` global batches, sorted by length inside
each bucket, cut into batches, and the full batches are shuffled (the one short batch stays last, as in plain
random batching, so every rank of a data-parallel run cuts its share at the same boundaries). The order is a pure
function of (seed, epoch), which keeps resume and torchrun exact.

Evaluation: rows are read shortest first; `in_dataset_order` puts what the model returns back in the rows' order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def row_lengths(rows) -> list[int] | None:
    """Each encoded row's token count; None when the rows are not token-id dicts (nothing to sort by)."""
    try:
        return [len(row["input_ids"]) for row in rows]
    except (TypeError, KeyError, IndexError):
        return None


def bucketed_order(lengths: Sequence[int], batch_size: int, bucket_batches: int, generator: torch.Generator) -> list[int]:
    """A shuffled order of row indices whose consecutive `batch_size` chunks hold rows of similar length."""
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    bucket = batch_size * bucket_batches  # a multiple of the batch: only the epoch's last batch can be short
    ordered = []
    for start in range(0, len(shuffled), bucket):
        ordered.extend(sorted(shuffled[start:start + bucket], key=lengths.__getitem__))  # stable: ties stay random
    batches = [ordered[start:start + batch_size] for start in range(0, len(ordered), batch_size)]
    short = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    mixed = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return [index for batch in mixed + short for index in batch]


class LengthSortedSampler(Sampler[int]):
    """Rows shortest first (ties in row order), for evaluation: each batch pads to a similar length."""

    def __init__(self, lengths: Sequence[int]):
        self.order = sorted(range(len(lengths)), key=lengths.__getitem__)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def in_dataset_order(values: torch.Tensor, sampler) -> torch.Tensor:
    """`values` (one per row, in the order `sampler` read them) back in the dataset's row order."""
    if not isinstance(sampler, LengthSortedSampler):
        return values
    restore = torch.empty(len(sampler.order), dtype=torch.long)
    restore[torch.tensor(sampler.order, dtype=torch.long)] = torch.arange(len(sampler.order))
    return values[restore]


__all__ = ["LengthSortedSampler", "bucketed_order", "in_dataset_order", "row_lengths"]
