"""Data-parallel training across processes (torchrun): ranks, per-epoch sharded order, gradient averaging.

One process is simply world size 1, so the engine has a single code path: the train loader is always
re-built over a sampler that shards by rank and reshuffles per epoch from (seed, epoch). That makes the
order of any epoch a pure function of its number, which is also what lets a resumed run skip exactly the
batches it had already consumed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

from alembert.batching import bucketed_order, row_lengths
from alembert.devices import collective_backend, resolve_device
from alembert.errors import fail


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: torch.device | None = None) -> None:
    """Join the process group torchrun describes in the environment: NCCL when this rank trains on a CUDA GPU
    (`device`, by default train.device=auto's choice), gloo otherwise; a no-op outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if not dist.is_available():
        raise fail("WORLD_SIZE>1 but this torch build has no torch.distributed", "install a torch build with distributed support")
    device = device or resolve_device("auto")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(collective_backend(device))


class ShardedSampler(DistributedSampler):
    """DistributedSampler that can start its next epoch part-way through (for resume) without loading the skipped
    rows, and, given row lengths, orders each epoch by length buckets (alembert.batching) at the global batch size:
    rank r reads every W-th row of one global order, so each rank's batch k is its share of global batch k."""

    skip = 0

    def __init__(self, dataset, *, batch_size: int, bucket_batches: int | None = None, **kwargs):
        super().__init__(dataset, **kwargs)
        self.global_batch = batch_size * self.num_replicas
        self.lengths = row_lengths(dataset) if bucket_batches and self.shuffle else None
        self.bucket_batches = bucket_batches

    def __iter__(self) -> Iterator[int]:
        indices = self._bucketed() if self.lengths else list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])

    def _bucketed(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = bucketed_order(self.lengths, self.global_batch, self.bucket_batches, generator)
        while len(order) < self.total_size:  # as DistributedSampler pads: repeat rows so every rank has as many
            order += order[: self.total_size - len(order)]
        return order[self.rank:self.total_size:self.num_replicas]


def shard_loader(train: DataLoader, seed: int, bucket_batches: int | None = None, *, pin_memory: bool = False) -> DataLoader:
    """The same rows, batch size and collate function, ordered by a per-epoch, per-rank sampler.

    Global batch = per-rank batch_size * world size. An iterable (streamed) dataset shards itself (and is not
    bucketed: a stream cannot be sorted ahead). `bucket_batches`: see alembert.batching; None: random batches.
    `pin_memory`: page-locked batches, for asynchronous copies to a GPU.
    """
    if isinstance(train.dataset, IterableDataset):
        return train
    rank, size = world()
    sampler = ShardedSampler(train.dataset, num_replicas=size, rank=rank, seed=seed,
                             shuffle=isinstance(train.sampler, RandomSampler), drop_last=False,
                             batch_size=train.batch_size, bucket_batches=bucket_batches)
    # A generator of its own: iterating a DataLoader without one draws from the global RNG (dropout's), and
    # a resumed run must see the same global RNG stream as an uninterrupted one.
    return DataLoader(train.dataset, batch_size=train.batch_size, sampler=sampler, collate_fn=train.collate_fn,
                      num_workers=train.num_workers, pin_memory=pin_memory or train.pin_memory, drop_last=train.drop_last,
                      generator=torch.Generator().manual_seed(seed))


def epoch_batches(train: DataLoader, epoch: int, skip: int, count: int) -> Iterable[dict]:
    """Batches `skip` .. `count` of epoch `epoch` (0-based), in the order an uninterrupted run sees them."""
    for holder in (train.sampler, train.dataset):
        if hasattr(holder, "set_epoch"):
            holder.set_epoch(epoch)
    if isinstance(train.sampler, ShardedSampler):
        train.sampler.skip = skip * train.batch_size
        iterator = iter(train)
    else:  # a stream cannot seek: read and drop what was consumed
        iterator = iter(train)
        for _ in range(skip):
            next(iterator, None)
    for _ in range(count - skip):
        batch = next(iterator, None)
        if batch is None:
            return
        yield batch


def agree_min(value: int, device: torch.device) -> int:
    """The smallest `value` over ranks: every rank must take the same number of steps or an all-reduce hangs.
    Every collective here takes tensors on the rank's training `device`: NCCL refuses CPU tensors."""
    if world()[1] == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def broadcast_parameters(modules: Iterable[nn.Module]) -> None:
    """Start every rank from rank 0's weights (what DistributedDataParallel does when it wraps a model)."""
    if world()[1] == 1:
        return
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def data_parallel(model: nn.Module, device: torch.device) -> DistributedDataParallel | None:
    """The student wrapped in DistributedDataParallel under torchrun (None in one process), so that its gradients
    are averaged bucket by bucket while backward still runs. find_unused_parameters: LayerDrop and module
    replacement leave some layers out of a step. Buffers are constant position and type ids: not re-broadcast."""
    if world()[1] == 1:
        return None
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True, broadcast_buffers=False)


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Average gradients over ranks in one flat all-reduce per optimizer step: for the modules trained beside a
    DistributedDataParallel student (TinyBERT's projections), which are small."""
    size = world()[1]
    if size == 1 or not parameters:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for parameter, grad in zip(parameters, grads):
        averaged = flat[offset:offset + grad.numel()].view_as(grad)
        if parameter.grad is None:
            parameter.grad = averaged.clone()
        else:
            parameter.grad.copy_(averaged)
        offset += grad.numel()


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats (loss terms) over ranks, so rank 0 reports the global batch, not its shard."""
    if world()[1] == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[key] for key in keys], dtype=torch.float32 if device.type == "mps" else torch.float64,
                          device=device)
    dist.all_reduce(tensor)
    return {key: float(value) / world()[1] for key, value in zip(keys, tensor.tolist())}


def broadcast_object(value):
    """Rank 0's `value` on every rank (dev metrics: only rank 0 evaluates, every rank must take the same decision)."""
    if world()[1] == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value) -> list:
    """Every rank's `value`, in rank order (each rank's RNG state for a checkpoint)."""
    if world()[1] == 1:
        return [value]
    gathered = [None] * world()[1]
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
