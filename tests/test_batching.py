"""Length-bucketed batches: the same rows with less padding, a pure function of (seed, epoch), split across ranks
at the same boundaries as one process, and evaluation results back in the rows' order."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from alembert.batching import LengthSortedSampler, bucketed_order, in_dataset_order
from distill.distributed import ShardedSampler, epoch_batches, shard_loader


def _lengths(count: int, seed: int = 0) -> list[int]:
    draw = random.Random(seed)
    return [draw.randint(2, 60) for _ in range(count)]


def _padded_tokens(order: list[int], lengths: list[int], batch: int) -> int:
    return sum(max(lengths[i] for i in order[k:k + batch]) * len(order[k:k + batch]) for k in range(0, len(order), batch))


def _order(lengths, batch=8, buckets=4, seed=0):
    return bucketed_order(lengths, batch, buckets, torch.Generator().manual_seed(seed))


def test_an_epoch_holds_every_row_once_and_pads_far_less_than_random_batches():
    lengths = _lengths(1000)
    order = _order(lengths, batch=32, buckets=5)
    assert sorted(order) == list(range(1000))
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    bucketed, plain = _padded_tokens(order, lengths, 32), _padded_tokens(shuffled, lengths, 32)
    assert bucketed - sum(lengths) < 0.25 * (plain - sum(lengths))  # under a quarter of the padding


def test_each_batch_comes_from_one_sorted_bucket_and_the_short_batch_stays_last():
    lengths = _lengths(100)
    order = _order(lengths, batch=8, buckets=4)
    batches = [order[k:k + 8] for k in range(0, 100, 8)]
    assert [len(b) for b in batches] == [8] * 12 + [4]
    for batch in batches:
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)
    # the full batches are shuffled: they are not in ascending length within the first bucket
    assert [max(lengths[i] for i in b) for b in batches[:4]] != sorted(max(lengths[i] for i in b) for b in batches[:4])


def test_the_order_repeats_with_the_seed_and_changes_with_it():
    lengths = _lengths(200)
    assert _order(lengths, seed=3) == _order(lengths, seed=3)
    assert _order(lengths, seed=3) != _order(lengths, seed=4)


def _sampler(rows, *, rank=0, replicas=1, batch=4, buckets=2, seed=7):
    return ShardedSampler(rows, num_replicas=replicas, rank=rank, seed=seed, shuffle=True, drop_last=False,
                          batch_size=batch, bucket_batches=buckets)


@pytest.mark.parametrize("count", [64, 61])  # 61: the short batch, and DistributedSampler's padding to even ranks
def test_two_ranks_read_the_two_halves_of_each_global_batch_one_process_reads(count):
    rows = [{"input_ids": [1] * n} for n in _lengths(count)]
    one = _sampler(rows, batch=8)
    ranks = [_sampler(rows, rank=r, replicas=2, batch=4) for r in (0, 1)]
    for epoch in (0, 1):
        for sampler in (one, *ranks):
            sampler.set_epoch(epoch)
        single, shares = list(one), [list(s) for s in ranks]
        assert len(shares[0]) == len(shares[1]) == -(-count // 2)
        for k in range(0, len(single), 8):
            global_batch = set(single[k:k + 8])
            split = set(shares[0][k // 2:k // 2 + 4]) | set(shares[1][k // 2:k // 2 + 4])
            assert global_batch <= split
            assert split - global_batch <= set(single[:1])  # the padding row DistributedSampler repeats, if any


def test_a_resumed_epoch_skips_exactly_the_batches_already_read():
    rows = [{"input_ids": [1] * n} for n in _lengths(40)]
    train = DataLoader(rows, batch_size=4, shuffle=True, collate_fn=lambda batch: [len(r["input_ids"]) for r in batch])
    train = shard_loader(train, seed=9, bucket_batches=3)
    full = list(epoch_batches(train, 2, 0, 10))
    assert list(epoch_batches(train, 2, 6, 10)) == full[6:]
    assert list(epoch_batches(train, 3, 0, 10)) != full  # the next epoch is ordered anew


def test_bucketing_off_is_plain_random_batching_and_on_pads_less():
    rows = [{"input_ids": [1] * n} for n in _lengths(40)]
    train = DataLoader(rows, batch_size=4, shuffle=True, collate_fn=lambda batch: [len(r["input_ids"]) for r in batch])
    bucketed, plain = shard_loader(train, 9, 50), shard_loader(train, 9, None)
    assert list(plain.sampler) == list(DistributedSampler(rows, num_replicas=1, rank=0, seed=9, shuffle=True))
    assert sorted(bucketed.sampler) == list(range(40))
    assert sum(max(b) * len(b) for b in bucketed) < sum(max(b) * len(b) for b in plain)


def test_evaluation_reads_shortest_first_and_returns_logits_in_the_rows_order(tiny_dir):
    from alembert.data import loader
    from alembert.evaluate import predict_logits
    from alembert.modeldir import load_classifier, load_tokenizer
    from alembert.tasks import task_named
    from tests.conftest import demo_loaders

    directory = str(tiny_dir("bert", 2))
    tokenizer = load_tokenizer(directory)
    _, dev = demo_loaders(tokenizer)
    rows = list(dev.dataset)
    sorted_loader = loader(rows, tokenizer, batch_size=3, task=task_named("classification"))
    assert isinstance(sorted_loader.sampler, LengthSortedSampler)
    assert [len(rows[i]["input_ids"]) for i in sorted_loader.sampler.order] == sorted(len(r["input_ids"]) for r in rows)
    in_order = DataLoader(rows, batch_size=1, collate_fn=sorted_loader.collate_fn)  # no padding at all
    model = load_classifier(directory)[0]
    got_logits, got_labels = predict_logits(model, sorted_loader)
    want_logits, want_labels = predict_logits(model, in_order)
    assert torch.equal(got_labels, want_labels)
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=1e-4)


def test_in_dataset_order_inverts_the_sorted_read():
    sampler = LengthSortedSampler([5, 1, 3, 2])
    assert sampler.order == [1, 3, 2, 0]
    read = torch.tensor([10, 30, 20, 0])  # the values of rows 1, 3, 2, 0 (row i's value is 10 * i), as read
    assert in_dataset_order(read, sampler).tolist() == [0, 10, 20, 30]
