"""train.teacher_store: teacher logits kept on disk between runs, read back equal, keyed by teacher and rows, and a
damaged entry recomputed rather than trusted."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert.modeldir import load_tokenizer
from alembert.training import TrainConfig
from distill.models import Teacher
from distill.teacher_cache import CacheBudget, CachedTeacher, cache_teacher
from distill.teacher_store import load_rows, save_rows
from pipeline.run import run
from tests.test_run_modes import _config

from conftest import demo_loaders


def test_rows_round_trip_with_gaps_and_either_rank(tmp_path):
    sequence = [torch.randn(3), None, torch.randn(3)]
    tokens = [torch.randn(4, 5), torch.randn(2, 5), None, None]
    for rows in (sequence, tokens):
        save_rows(tmp_path, "k", rows)
        back = load_rows(tmp_path, "k")
        assert len(back) == len(rows) and all((a is None and b is None) or torch.equal(a, b) for a, b in zip(rows, back))
    assert load_rows(tmp_path, "missing") is None
    assert [path.name for path in tmp_path.iterdir()] == ["k.safetensors"]  # no temporary file left


@pytest.fixture(scope="module")
def setup(tiny_dir):
    directory = tiny_dir("bert", 2)
    teacher = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    train, _ = demo_loaders(load_tokenizer(str(directory)), train_size=24, batch_size=4)
    return teacher, train


def cached(teacher, train, store, said):
    return cache_teacher(Teacher(teacher), train, torch.device("cpu"), {}, CacheBudget(), batch_size=16,
                         say=said.append, keep_in=str(store))


def test_a_second_run_reads_the_stored_logits_and_another_teacher_does_not(setup, tmp_path):
    teacher, train = setup
    first_said, second_said = [], []
    first = cached(teacher, train, tmp_path, first_said)
    second = cached(copy.deepcopy(teacher), train, tmp_path, second_said)  # the same weights, another object
    assert "stored for later runs" in first_said[0] and "read from the teacher store" in second_said[0]
    assert isinstance(second, CachedTeacher) and all(torch.equal(a, b) for a, b in zip(first.rows, second.rows))
    live = CachedTeacher.build(Teacher(teacher), train, torch.device("cpu"))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(live.rows, second.rows))
    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        changed.classifier.bias += 1.0
    other_said = []
    other = cached(changed, train, tmp_path, other_said)
    assert "stored for later runs" in other_said[0] and len(list(tmp_path.glob("*.safetensors"))) == 2
    assert torch.allclose(other.rows[0], first.rows[0] + 1.0, atol=1e-5)


def test_a_damaged_entry_is_recomputed(setup, tmp_path):
    teacher, train = setup
    cached(teacher, train, tmp_path, [])
    [entry] = tmp_path.glob("*.safetensors")
    entry.write_bytes(b"not a safetensors file")
    said = []
    again = cached(teacher, train, tmp_path, said)
    assert "stored for later runs" in said[0] and isinstance(again, CachedTeacher)
    assert load_rows(tmp_path, entry.stem) is not None


def test_two_runs_with_a_store_train_the_same_student_and_the_second_reads_the_teacher(tiny_dir, tmp_path, capsys):
    config = _config(tiny_dir("bert"), train=TrainConfig(epochs=1, batch_size=16, teacher_store=str(tmp_path / "store")))
    first = run(config, tmp_path / "first")
    assert "stored for later runs" in capsys.readouterr().out
    second = run(config, tmp_path / "second")
    assert "read from the teacher store" in capsys.readouterr().out
    assert first[1]["model"] == second[1]["model"] == "student (KD)"
    assert first[1]["kl_to_teacher"] == pytest.approx(second[1]["kl_to_teacher"], abs=1e-6)
