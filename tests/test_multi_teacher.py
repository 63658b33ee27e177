"""Multi-teacher soft targets: the weighted mixture against a hand computation, validation, and use in fit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, BertConfig

from conftest import tiny_tokenizer
from alembert.data import DataConfig, Example, loader
from alembert.training import TrainConfig
from distill.engine import fit
from alembert.errors import AlembertError
from alembert.training import KDConfig
from distill.losses import kd_objective, soft_targets
from distill.models import StudentConfig, build_student
from alembert.modeldir import load_classifier
from alembert.tasks import task_named
from distill.multi_teacher import MultiTeacher, check_same_tokenizer, soft_target_temperature
from distill.recipes import StageConfig, TermConfig

CLASSIFICATION = task_named("classification")


@pytest.fixture(scope="module")
def two_teachers(tiny_dir):
    return load_classifier(str(tiny_dir("bert", 2)))[0], load_classifier(str(tiny_dir("bert", 4)))[0]


def batch_of(directory, texts=("the movie was good", "the plot is dull", "a truly awful ending")):
    tokenizer = tiny_tokenizer(directory / "tok-mt")
    rows = CLASSIFICATION.encode([Example(t, None, i % 2) for i, t in enumerate(texts)], tokenizer, DataConfig(max_length=32))
    return next(iter(loader(rows, tokenizer, batch_size=len(rows), task=task_named("classification")))), tokenizer


def test_soft_targets_are_the_weighted_mixture(two_teachers, tiny_dir):
    batch, _ = batch_of(tiny_dir("bert", 2))
    T = 2.0
    teacher = MultiTeacher(two_teachers, [1.0, 3.0], temperature=T)  # normalised to (0.25, 0.75)
    z1, z2 = (m(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits for m in two_teachers)
    expected = 0.25 * F.softmax(z1 / T, -1) + 0.75 * F.softmax(z2 / T, -1)
    mixed = teacher.features(batch).logits
    assert torch.allclose(F.softmax(mixed / T, -1), expected, atol=1e-6)
    student = torch.randn_like(mixed)
    by_hand = (expected * (expected.log() - F.log_softmax(student / T, -1))).sum(-1).mean() * T**2
    assert torch.allclose(soft_targets(student, mixed, T), by_hand, atol=1e-6)


def test_moving_a_multi_teacher_moves_every_teacher(tiny_dir):
    """fit puts the teacher beside the student; a GPU student must not leave the second teacher on the CPU."""
    models = [load_classifier(str(tiny_dir("bert", layers)))[0] for layers in (2, 4)]
    MultiTeacher(models).to(torch.device("meta"))
    assert {parameter.device.type for model in models for parameter in model.parameters()} == {"meta"}


def test_one_output_heads_average_their_outputs():
    z1, z2 = torch.tensor([[1.0], [3.0]]), torch.tensor([[5.0], [-1.0]])
    assert torch.allclose(task_named("regression").mix([z1, z2], torch.tensor([0.25, 0.75]), 4.0), torch.tensor([[4.0], [0.0]]))


def test_mixture_of_confident_teachers_stays_finite():
    z1, z2 = torch.tensor([[1000.0, -1000.0]]), torch.tensor([[-1000.0, 1000.0]])
    mixed = task_named("classification").mix([z1, z2], torch.tensor([0.5, 0.5]), 1.0)
    assert torch.isfinite(mixed).all()
    assert torch.allclose(F.softmax(mixed, -1), torch.tensor([[0.5, 0.5]]))


def test_bad_teacher_sets_are_refused(two_teachers, tiny_dir):
    three = AutoModelForSequenceClassification.from_config(
        BertConfig(vocab_size=two_teachers[0].config.vocab_size, hidden_size=32, num_hidden_layers=1,
                   num_attention_heads=4, intermediate_size=64, num_labels=3))
    with pytest.raises(AlembertError, match="3 labels but teacher 1 has 2"):
        MultiTeacher([two_teachers[0], three])
    other_vocab = AutoModelForSequenceClassification.from_config(
        BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64))
    with pytest.raises(AlembertError, match="share one tokenizer"):
        MultiTeacher([two_teachers[0], other_vocab])
    with pytest.raises(AlembertError, match="one weight per teacher"):
        MultiTeacher(two_teachers, [1.0])
    with pytest.raises(AlembertError, match="must all be positive"):
        MultiTeacher(two_teachers, [1.0, 0.0])
    swapped = AutoModelForSequenceClassification.from_config(
        BertConfig(vocab_size=two_teachers[0].config.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                   intermediate_size=64, id2label={0: "positive", 1: "negative"}))
    with pytest.raises(AlembertError, match="orders its labels"):
        MultiTeacher([two_teachers[0], swapped])
    batch, tokenizer = batch_of(tiny_dir("bert", 2))
    with pytest.raises(AlembertError, match="soft targets only"):
        MultiTeacher(two_teachers).features(batch, hidden=True)
    smaller = type(tokenizer)(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])})
    check_same_tokenizer([tokenizer, tokenizer])
    with pytest.raises(AlembertError, match="tokenizer differs"):
        check_same_tokenizer([tokenizer, smaller])


def test_fit_distils_from_a_multi_teacher(two_teachers, tiny_dir):
    tokenizer = tiny_tokenizer(tiny_dir("bert", 2) / "tok-mt")
    rows = CLASSIFICATION.encode([Example(t, None, i % 2) for i, t in enumerate(["the movie was good", "the plot is dull"] * 4)], tokenizer, DataConfig(max_length=32))
    data = loader(rows, tokenizer, batch_size=4, task=task_named("classification"))
    teacher = MultiTeacher(two_teachers, [0.25, 0.75], temperature=2.0)
    student = build_student(teacher.model, StudentConfig(num_layers=1))
    objective = kd_objective(KDConfig(temperature=2.0, alpha=0.0), task=task_named("classification"))
    history = fit(student, data, None, objective, TrainConfig(epochs=1, batch_size=4), teacher=teacher)
    assert history.epochs[0]["kd"] > 0


def test_temperature_comes_from_the_recipe():
    stage = StageConfig(terms=(TermConfig("hard", 0.5), TermConfig("kd", 0.5, {"temperature": 4.0})))
    assert soft_target_temperature([stage]) == 4.0
    assert soft_target_temperature([StageConfig(terms=(TermConfig("hard", 1.0),))]) == 1.0
    other = StageConfig(terms=(TermConfig("kd", 1.0, {"temperature": 2.0}),))
    with pytest.raises(AlembertError, match="temperatures \\[2.0, 4.0\\]"):
        soft_target_temperature([stage, other])
    scheduled = StageConfig(terms=(TermConfig("kd", 1.0, schedules={"temperature": {"kind": "linear", "start": 4, "end": 1}}),))
    with pytest.raises(AlembertError, match="schedules its temperature"):
        soft_target_temperature([scheduled])
