"""BERT-of-Theseus: at p = 0 the hybrid is the teacher, at p = 1 the compact student; the curriculum reaches 1 on
schedule; draws are per block and per step; training leaves a plain student that reloads with identical logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert.errors import AlembertError
from alembert.modeldir import load_classifier, load_tokenizer
from alembert.training import TrainConfig
from conftest import demo_loaders, without_dropout
from distill.engine import fit
from distill.losses import Objective, Term
from distill.models import StudentConfig, build_student
from distill.recipes import RecipeConfig, StageConfig, TermConfig, check_recipe
from distill.theseus import ReplacementConfig, TheseusLayers, block_sizes, replacing

INPUTS = {"input_ids": torch.tensor([[2, 10, 11, 12, 3, 0], [2, 13, 14, 3, 0, 0]]),
          "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])}


@pytest.fixture
def pair(tiny_dir):
    """A 4-layer teacher and a 2-layer student built from it (layers 0 and 2), both without dropout."""
    teacher = without_dropout(load_classifier(str(tiny_dir("bert", 4)))[0]).eval()
    student = without_dropout(build_student(teacher, StudentConfig(num_layers=2)))
    return teacher, student


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(**INPUTS).logits


def test_at_rate_0_the_hybrid_is_the_teacher(pair):
    teacher, student = pair
    with replacing(student, teacher, ReplacementConfig(rate=0.0), seed=1):
        student.train()
        hybrid = logits(student)
    # a random tiny head gives logits near 1e-3, so closeness is judged against differences of that scale
    assert torch.allclose(hybrid, logits(teacher), rtol=1e-4, atol=1e-8)
    assert (logits(student.eval()) - logits(teacher)).abs().max() > 1e-5  # the compact student differs


def test_at_rate_1_the_hybrid_is_the_compact_student(pair):
    teacher, student = pair
    compact = logits(student.train())
    with replacing(student, teacher, ReplacementConfig(rate=1.0), seed=1):
        student.train()
        assert torch.equal(logits(student), compact)
        assert torch.equal(logits(student.eval()), compact)  # eval mode always runs the successors


def test_the_linear_curriculum_reaches_1_on_schedule():
    curriculum = ReplacementConfig(schedule="linear", start=0.3, ramp=0.5)
    assert [curriculum.rate_at(t) for t in (0.0, 0.25, 0.5, 0.9)] == pytest.approx([0.3, 0.65, 1.0, 1.0])
    assert ReplacementConfig(rate=0.4).rate_at(0.9) == 0.4
    layers = TheseusLayers([torch.nn.Linear(1, 1) for _ in range(3)], replacement=curriculum, seed=5)
    replaced = []
    for step in range(100):
        layers.at_step(step, step / 100)
        replaced.append([block.replaced for block in layers])
    assert all(all(row) for row in replaced[50:])  # successors only from the end of the ramp on
    assert 0 < sum(map(sum, replaced[:10])) < 30  # before: some blocks still run their predecessors


def test_blocks_are_drawn_per_block_per_step_and_repeat_with_the_seed():
    def draws(seed):
        layers = TheseusLayers([torch.nn.Linear(1, 1) for _ in range(3)], replacement=ReplacementConfig(rate=0.5), seed=seed)
        pattern = []
        for step in range(300):
            layers.at_step(step, step / 300)
            pattern.append(tuple(block.replaced for block in layers))
        return pattern

    pattern = draws(7)
    assert pattern == draws(7) and pattern != draws(8)
    share = sum(map(sum, pattern)) / (3 * len(pattern))
    assert 0.4 < share < 0.6 and len(set(pattern)) == 8  # all 2^3 block combinations occur


def test_block_sizes_split_the_teacher_evenly_or_as_given():
    assert block_sizes(ReplacementConfig(), 3, 6) == (2, 2, 2)
    assert block_sizes(ReplacementConfig(), 4, 6) == (1, 2, 1, 2)
    assert block_sizes(ReplacementConfig(blocks=(3, 2, 1)), 3, 6) == (3, 2, 1)
    with pytest.raises(AlembertError, match="does not split the teacher's 6 layers") as err:
        block_sizes(ReplacementConfig(blocks=(3, 2)), 3, 6)
    assert "\n" not in str(err.value)
    with pytest.raises(AlembertError, match="no more student layers"):
        block_sizes(ReplacementConfig(), 8, 6)


def test_training_leaves_a_plain_student_that_reloads_with_identical_logits(tiny_dir, tmp_path):
    teacher = load_classifier(str(tiny_dir("bert", 4)))[0].eval()
    frozen = {name: value.clone() for name, value in teacher.state_dict().items()}
    student = build_student(teacher, StudentConfig(num_layers=2))
    train, dev = demo_loaders(load_tokenizer(str(tiny_dir("bert", 4))))
    before = {name: value.clone() for name, value in student.state_dict().items()}
    with replacing(student, teacher, ReplacementConfig(rate=0.5), seed=3):
        fit(student, train, dev, Objective((Term("hard", 1.0),)), TrainConfig(epochs=2, batch_size=4, lr=1e-3))
    assert type(student.bert.encoder.layer) is torch.nn.ModuleList and len(student.bert.encoder.layer) == 2
    assert set(student.state_dict()) == set(before)  # no predecessor or block left inside
    assert any(not torch.equal(before[name], value) for name, value in student.state_dict().items())
    assert all(torch.equal(frozen[name], value) for name, value in teacher.state_dict().items())
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 2
    assert torch.equal(logits(reloaded), logits(student.eval()))


def test_layer_wise_terms_are_refused_beside_replacement():
    stage = StageConfig(terms=(TermConfig("hard"), TermConfig("tinybert_hidden")), replacement=ReplacementConfig())
    with pytest.raises(AlembertError, match="cannot use layer-wise terms") as err:
        check_recipe(RecipeConfig(stages=(stage,)))
    assert "\n" not in str(err.value)


def test_a_narrower_student_is_refused_in_one_line(tiny_dir):
    teacher = load_classifier(str(tiny_dir("bert", 4)))[0]
    narrow = build_student(teacher, StudentConfig(num_layers=2, init="random", hidden_size=16, num_heads=4))
    with pytest.raises(AlembertError, match="needs the teacher's hidden size") as err:
        with replacing(narrow, teacher, ReplacementConfig(), seed=0):
            pass
    assert "\n" not in str(err.value)
