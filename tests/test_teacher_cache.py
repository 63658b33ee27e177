"""The teacher cache of layer features (train.cache_teacher): only the layers the terms read, equal to a live
teacher's within fp16, in memory or memory-mapped, and a teacher that runs every step when they do not fit."""

from __future__ import annotations

import errno
import os
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert.modeldir import load_tokenizer
from alembert.training import TrainConfig
from distill.engine import fit
from distill.losses import Objective, Term
from distill.models import StudentConfig, Teacher, build_student
from distill.teacher_cache import CacheBudget, CachedTeacher, cache_teacher, plan_store, _lengths_by_index

from conftest import demo_loaders, without_dropout

TINYBERT = Objective((Term("tinybert_embedding", 1.0), Term("tinybert_hidden", 1.0), Term("tinybert_attention", 1.0)))
MINILM = Objective((Term("minilm_attention", 1.0), Term("minilm_value", 1.0)))
# fp16 keeps 11 significant bits: a relative error of at most 2^-11 on every cached entry
FP16 = dict(rtol=2 ** -10, atol=1e-4)


def test_the_objective_names_the_teacher_layers_its_terms_read():
    assert TINYBERT.teacher_reads(2, 4) == {"hidden_states": {0, 2, 4}, "attentions": {1, 3}}  # layers 2 and 4
    assert MINILM.teacher_reads(2, 4) == {"attentions": {3}, "values": {3}}  # the last layer, by default
    pkd = Objective((Term("pkd", 1.0, (("layers", "last_k"), ("k", 2))),))
    assert pkd.teacher_reads(2, 6) == {"hidden_states": {5, 6}}
    assert Objective((Term("hard", 0.5), Term("kd", 0.5))).teacher_reads(2, 4) == {}


@pytest.fixture(scope="module")
def setup(tiny_dir):
    directory = tiny_dir("bert", 4)
    tokenizer = load_tokenizer(str(directory))
    teacher = AutoModelForSequenceClassification.from_pretrained(directory, attn_implementation="eager").eval()
    train, _ = demo_loaders(tokenizer, train_size=24, batch_size=4)
    return teacher, train


def built(setup, objective, budget=CacheBudget(), messages=None):
    teacher, train = setup
    said = [] if messages is None else messages
    cached = cache_teacher(Teacher(teacher), train, torch.device("cpu"), objective.teacher_reads(2, 4), budget,
                           batch_size=16, say=said.append)
    return cached, said


@pytest.mark.parametrize("objective", [TINYBERT, MINILM], ids=["tinybert", "minilm"])
def test_cached_features_are_the_live_teachers_at_every_real_token_and_zero_at_padding(setup, objective):
    teacher, train = setup
    cached, said = built(setup, objective)
    assert isinstance(cached, CachedTeacher) and "in memory" in said[0]
    wanted = dict(hidden=objective.needs_hidden, attentions=objective.needs_attentions, values=objective.needs_values)
    reads = objective.teacher_reads(2, 4)
    for batch in train:
        stored, live = cached.features(batch, **wanted), Teacher(teacher).features(batch, **wanted)
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(stored.logits, live.logits, rtol=0, atol=1e-5)
        for field, positions in reads.items():
            ours, theirs = getattr(stored, field), getattr(live, field)
            assert len(ours) == len(theirs)
            assert [i for i, layer in enumerate(ours) if layer is not None] == sorted(positions)  # nothing more kept
            for i in positions:
                assert ours[i].shape == theirs[i].shape and ours[i].dtype == torch.float32
                if field == "attentions":  # (batch, heads, query, key): real queries against real keys
                    pair = real[:, None, :, None] & real[:, None, None, :]
                    pair = pair.expand_as(ours[i])
                    torch.testing.assert_close(ours[i][pair], theirs[i][pair], **FP16)
                    assert (ours[i][~pair] == 0).all()
                else:
                    tokens = real[:, None, :].expand(ours[i].shape[:3]) if field == "values" else real
                    torch.testing.assert_close(ours[i][tokens], theirs[i][tokens], **FP16)
                    assert (ours[i][~tokens] == 0).all()


def test_memory_mapped_features_equal_in_memory_ones_and_leave_no_file_behind(setup, tmp_path):
    in_memory, _ = built(setup, TINYBERT)
    mapped, said = built(setup, TINYBERT, CacheBudget(memory_gb=0.0, disk_dir=str(tmp_path)))
    assert "memory-mapped in" in said[0] and list(tmp_path.iterdir()) == []  # unlinked as soon as it is mapped
    for batch in setup[1]:
        a, b = in_memory.features(batch, hidden=True, attentions=True), mapped.features(batch, hidden=True, attentions=True)
        for x, y in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions):
            assert (x is None and y is None) or torch.equal(x, y)


def test_features_over_the_budget_or_the_disk_leave_the_teacher_running_with_one_line(setup, tmp_path, monkeypatch):
    live, said = built(setup, TINYBERT, CacheBudget(memory_gb=0.0, disk_gb=0.0))
    assert isinstance(live, Teacher) and len(said) == 1
    assert "over train.cache_disk_gb=0" in said[0] and "the teacher runs every step" in said[0]

    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    live, said = built(setup, TINYBERT, CacheBudget(memory_gb=0.0, disk_dir=str(tmp_path)))
    assert isinstance(live, Teacher) and "No space left on device" in said[0]
    assert list(tmp_path.iterdir()) == []


def test_a_store_is_sized_exactly_for_the_rows_and_layers_it_keeps(setup):
    teacher, train = setup
    lengths = _lengths_by_index(train.dataset)
    store, where = plan_store({"hidden_states": frozenset({0, 4}), "attentions": frozenset({3})}, lengths,
                              teacher.config, CacheBudget())
    tokens, squares = sum(lengths), sum(n * n for n in lengths)
    assert sorted(store.rows) == [("attentions", 3), ("hidden_states", 0), ("hidden_states", 4)]
    assert sum(rows.buffer.size for rows in store.rows.values()) == 2 * tokens * 32 + 4 * squares  # hidden 32, 4 heads
    assert store.tuple_lengths == {"hidden_states": 5, "attentions": 4, "values": 4}
    assert f"{2 * (2 * tokens * 32 + 4 * squares) / 1024 ** 3:.2f} GB in memory" == where


def test_with_the_cache_the_teacher_runs_only_its_one_pass_and_trains_the_same_student(setup):
    teacher, train = setup
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    config = TrainConfig(epochs=2, batch_size=4, lr=3e-3, seed=3, precision="fp32")  # as the cache pass
    students = {}
    try:
        for cached in (True, False):
            calls.clear()
            torch.manual_seed(0)
            # a random student: far from the teacher, so fp16's rounding is small beside every gradient
            student = without_dropout(build_student(teacher, StudentConfig(num_layers=2, init="random")))
            history = fit(student, train, None, TINYBERT, replace(config, cache_teacher=cached), teacher=Teacher(teacher),
                          keep_best=False)
            students[cached] = (student, len(calls), history.epochs)
    finally:
        hook.remove()
    assert students[True][1] == len(train)  # one pass (at the training batch size: it reads attention maps)
    assert students[False][1] == 2 * len(train)  # every step of both epochs
    for a, b in zip(students[True][2], students[False][2]):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-6) for k in a)
    torch.manual_seed(0)
    untrained = build_student(teacher, StudentConfig(num_layers=2, init="random"))
    moved = max((a - b).abs().max() for a, b in zip(students[True][0].parameters(), untrained.parameters()))
    assert moved > 1e-2  # training changed the student far more than the tolerance below
    for a, b in zip(students[True][0].parameters(), students[False][0].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=5e-4)


def test_a_cache_dir_that_is_not_a_directory_is_one_clear_line(setup, tmp_path):
    from alembert.errors import AlembertError

    with pytest.raises(AlembertError, match=r"train.cache_dir=.*missing is not a directory"):
        built(setup, TINYBERT, CacheBudget(memory_gb=0.0, disk_dir=str(tmp_path / "missing")))


def test_under_torchrun_each_rank_runs_the_teacher_on_its_share_and_all_get_every_row(setup, monkeypatch):
    from distill import teacher_cache

    teacher, train = setup
    whole = CachedTeacher.build(Teacher(teacher), train, torch.device("cpu"), batch_size=16)
    shards = []

    def gather(rows):  # what all_gather_object returns: every rank's shard, in rank order
        shards.append(dict(rows))
        return shards[:1] + [rows] if len(shards) == 2 else [rows]

    monkeypatch.setattr(teacher_cache, "gather_objects", gather)
    for rank in (0, 1):
        monkeypatch.setattr(teacher_cache, "world", lambda rank=rank: (rank, 2))
        merged = CachedTeacher.build(Teacher(teacher), train, torch.device("cpu"), batch_size=16)
    assert [len(shard) for shard in shards] == [12, 12] and not set(shards[0]) & set(shards[1])
    assert len(merged.rows) == len(whole.rows) == 24
    for mine, reference in zip(merged.rows, whole.rows):  # other batch neighbours, other padding: float noise only
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-5)
