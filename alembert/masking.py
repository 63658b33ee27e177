"""BERT's dynamic masking, for the masked_lm task (alembert/tasks/masked_lm.py).

Rows are tokenised once; each batch is masked afresh at collate time, so every epoch sees new masks. A batch's
masks are drawn from (seed, epoch, its rows), never from a generator that runs on from batch to batch: a resumed
run, or a rank of a data-parallel run, then masks exactly as an uninterrupted single-process run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from alembert.config import bounded
from alembert.errors import fail

IGNORE = -100  # the label the losses and metrics skip: positions that were not masked


@dataclass(frozen=True)
class MaskingConfig:
    """`probability` of the real non-special tokens are chosen; of those, `mask_ratio` become [MASK],
    `random_ratio` a random token, and the rest stay as they are (but are still predicted)."""

    probability: float = bounded(0.15, above=0.0, high=1.0)
    mask_ratio: float = bounded(0.8, low=0.0, high=1.0)
    random_ratio: float = bounded(0.1, low=0.0, high=1.0)

    def __post_init__(self):
        if not 0.0 < self.probability <= 1.0:
            raise fail(f"data.masking.probability={self.probability} is outside (0, 1]", "use BERT's 0.15")
        if self.mask_ratio < 0 or self.random_ratio < 0 or self.mask_ratio + self.random_ratio > 1.0:
            raise fail(f"data.masking.mask_ratio={self.mask_ratio} and random_ratio={self.random_ratio} do not fit in [0, 1]",
                       "use non-negative ratios that sum to at most 1, e.g. 0.8 and 0.1")


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
    """Encoded rows that know the epoch (the engine calls `set_epoch`) and how they are masked."""

    def __init__(self, rows: list[dict], masking: MaskingConfig):
        self.rows, self.masking, self.epoch = rows, masking, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {**self.rows[index], "epoch": self.epoch}  # in the row, so loader worker processes see it too

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def batch_generator(seed: int, rows: list[dict]) -> torch.Generator:
    """A generator seeded by (seed, epoch, the batch's row indices)."""
    key = repr((seed, rows[0].get("epoch", 0), [r["index"] for r in rows])).encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1)


def masking_collate(tokenizer, config: MaskingConfig, seed: int):
    """Pad rows to the batch's longest and mask them; the masks are a function of seed, epoch and rows."""
    if tokenizer.mask_token_id is None:
        raise fail("the tokenizer has no mask token", "the masked_lm task needs a BERT-style tokenizer with [MASK]")
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
