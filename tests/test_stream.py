"""Streamed corpora: a line file sharded by rank and DataLoader worker, each example read once per epoch."""

from __future__ import annotations

import json

import pytest

from alembert.tasks import task_named
from alembert.errors import AlembertError
from distill.stream import LineDataset, jsonl_task_encoder, stream_loader

LINES = 53  # not a multiple of ranks x workers x batch: the last batches are partial


def _corpus(path, blank_every: int = 0):
    with path.open("w") as handle:
        for number in range(LINES):
            blank = blank_every and number % blank_every == 0
            handle.write("\n" if blank else json.dumps({"sentence": f"the movie number {number} was good", "label": "pos" if number % 2 else "neg"}) + "\n")
    return path


def _seen(dataset, tokenizer, workers: int) -> list[int]:
    loader = stream_loader(dataset, tokenizer, batch_size=4, task=task_named("classification"), num_workers=workers)
    return [int(i) for batch in loader for i in batch["index"]]


@pytest.mark.parametrize("shuffle_buffer", [0, 8])
def test_no_rank_or_worker_sees_an_example_twice_and_every_line_is_read(tiny_dir, tmp_path, shuffle_buffer):
    from alembert.modeldir import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_dir("bert", 1)))
    path = _corpus(tmp_path / "train.jsonl", blank_every=10)
    encode = jsonl_task_encoder(tokenizer, 16, label_names=("neg", "pos"))
    per_rank = []
    for rank in range(2):
        dataset = LineDataset(path, encode, shuffle_buffer=shuffle_buffer, seed=1, rank=rank, world_size=2)
        assert len(dataset) == len(range(rank, LINES, 2))
        per_rank.append(_seen(dataset, tokenizer, workers=2))
    every = [i for seen in per_rank for i in seen]
    assert len(every) == len(set(every))  # nobody sees an example twice, within a rank or across ranks
    assert set(every) == {n for n in range(LINES) if n % 10}  # every non-blank line, once
    assert all(i % 2 == rank for rank, seen in enumerate(per_rank) for i in seen)


def test_a_new_epoch_reshuffles_the_same_shard(tiny_dir, tmp_path):
    from alembert.modeldir import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_dir("bert", 1)))
    dataset = LineDataset(_corpus(tmp_path / "train.jsonl"), jsonl_task_encoder(tokenizer, 16, label_names=("neg", "pos")),
                          shuffle_buffer=16, seed=3, rank=1, world_size=2)
    first = _seen(dataset, tokenizer, workers=0)
    assert _seen(dataset, tokenizer, workers=0) == first  # same epoch, same order
    dataset.set_epoch(1)
    second = _seen(dataset, tokenizer, workers=0)
    assert second != first and sorted(second) == sorted(first)


def test_fit_trains_on_a_stream_with_a_cached_teacher(tiny_dir, tmp_path):
    from alembert.training import TrainConfig
    from distill.engine import fit
    from distill.losses import Objective, Term
    from distill.models import Teacher
    from alembert.modeldir import load_classifier, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_dir("bert", 1)))
    dataset = LineDataset(_corpus(tmp_path / "train.jsonl"), jsonl_task_encoder(tokenizer, 16, label_names=("neg", "pos")))
    train = stream_loader(dataset, tokenizer, batch_size=8, task=task_named("classification"))
    student, _ = load_classifier(str(tiny_dir("bert", 1)))
    teacher, _ = load_classifier(str(tiny_dir("bert", 2)))
    objective = Objective((Term("hard", 0.5), Term("kd", 0.5, {"temperature": 2.0})))
    history = fit(student, train, None, objective, TrainConfig(epochs=2, batch_size=8, lr=1e-3), teacher=Teacher(teacher))
    assert [record["step"] for record in history.epochs] == [7, 14]  # ceil(53 / 8) batches per epoch


def test_a_malformed_line_fails_in_one_line(tiny_dir, tmp_path):
    from alembert.modeldir import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_dir("bert", 1)))
    (tmp_path / "bad.jsonl").write_text('{"sentence": "fine", "label": "pos"}\nnot json\n')
    dataset = LineDataset(tmp_path / "bad.jsonl", jsonl_task_encoder(tokenizer, 16, label_names=("neg", "pos")))
    with pytest.raises(AlembertError, match="line 2 is not a JSON object"):
        _seen(dataset, tokenizer, workers=0)
