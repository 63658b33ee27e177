"""BERT-PKD's patient term against a hand computation, its layer choice (Skip, Last, the left-out last layer), its
indifference to padding, and the recipe's mix alpha*CE + (1-alpha)*T^2*KL + beta*PT."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from alembert.conf import CONF_DIR
from alembert.config import from_dict
from alembert.errors import AlembertError
from alembert.resolvers import register_resolvers
from alembert.tasks import task_named
from distill.layer_features import HiddenProjection
from distill.losses import LOSSES
from distill.models import Features
from pipeline.run import RunConfig

register_resolvers(OmegaConf.register_new_resolver)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def features(hidden: list[list[list[list[float]]]]) -> Features:
    """hidden[layer][row][position] -> a Features with hidden_states over a (2, 3) batch of 2-d states."""
    return Features(logits=torch.zeros(2, 2), attention_mask=MASK, task=task_named("classification"),
                    hidden_states=tuple(torch.tensor(layer) for layer in hidden))


def states(cls_rows: list[list[float]], fill: float = 0.5) -> list[list[list[float]]]:
    """A layer whose [CLS] states are `cls_rows` and whose other positions hold `fill`."""
    return [[row, [fill, fill], [fill, fill]] for row in cls_rows]


def pkd(student: Features, teacher: Features, **params) -> float:
    return float(LOSSES["pkd"].fn(student, teacher, mask=student.attention_mask, **params))


# Two-layer student, four-layer teacher; uniform pairs (1, 2) and (2, 4); the last student layer is left out.
STUDENT = features([states([[0, 0], [0, 0]]), states([[3, 4], [1, 0]]), states([[9, 9], [9, 9]])])
TEACHER = features([states([[0, 0], [0, 0]]), states([[7, 7], [7, 7]]), states([[0, 2], [-1, 0]]),
                    states([[7, 7], [7, 7]]), states([[1, 1], [1, 1]])])


def test_the_patient_term_equals_the_hand_computation():
    # pair (1, 2): row 1: (0.6, 0.8) vs (0, 1) -> 0.36 + 0.04; row 2: (1, 0) vs (-1, 0) -> 4. Mean over rows 2.2.
    assert pkd(STUDENT, TEACHER) == pytest.approx((0.36 + 0.04 + 4.0) / 2)


def test_include_last_adds_the_last_pair_to_the_mean():
    # pair (2, 4): (9, 9) and (1, 1) normalise to the same vector: distance 0, so the mean over two pairs halves.
    assert pkd(STUDENT, TEACHER, include_last=True) == pytest.approx(2.2 / 2)


def test_pkd_last_maps_the_teachers_last_layers():
    # last_k with k = the student's depth: pairs (1, 3), (2, 4); without the last one: (1, 3) only.
    teacher = features([states([[0, 0], [0, 0]]), states([[1, 0], [1, 0]]), states([[1, 0], [1, 0]]),
                        states([[3, 4], [1, 0]]), states([[5, 5], [5, 5]])])
    assert pkd(STUDENT, teacher, layers="last_k", k=2) == pytest.approx(0.0)
    assert pkd(STUDENT, teacher) == pytest.approx((0.16 + 0.64 + 0.0) / 2)  # uniform reads teacher layer 2 instead


def test_padding_and_other_positions_never_move_the_term():
    moved = features([states([[0, 0], [0, 0]], fill=-40.0), states([[3, 4], [1, 0]], fill=123.0),
                      states([[9, 9], [9, 9]], fill=7.0)])
    assert pkd(moved, TEACHER) == pytest.approx(pkd(STUDENT, TEACHER))


def test_the_term_is_scale_free_and_its_gradient_flows():
    hidden = [torch.tensor(layer, requires_grad=True) for layer in
              ([states([[0, 0], [0, 0]]), states([[30, 40], [2, 0]]), states([[9, 9], [9, 9]])])]
    student = Features(logits=torch.zeros(2, 2), attention_mask=MASK, task=task_named("classification"),
                       hidden_states=tuple(hidden))
    value = LOSSES["pkd"].fn(student, TEACHER, mask=MASK)
    assert float(value.detach()) == pytest.approx(2.2)  # ten times the states, the same directions
    value.backward()
    assert hidden[1].grad[:, 0].abs().sum() > 0 and hidden[1].grad[:, 1:].abs().sum() == 0


def test_a_narrower_student_goes_through_the_projection():
    student = Features(logits=torch.zeros(2, 2), attention_mask=MASK, task=task_named("classification"),
                       hidden_states=tuple(torch.randn(2, 3, 3) for _ in range(3)))
    projection = HiddenProjection(3, 2, 2)
    value = LOSSES["pkd"].fn(student, TEACHER, mask=MASK, projection=projection)
    value.backward()
    assert math.isfinite(float(value.detach())) and projection.maps[1].weight.grad.abs().sum() > 0
    with pytest.raises(AlembertError, match="differs from the teacher"):
        LOSSES["pkd"].fn(student, TEACHER, mask=MASK)


def test_a_one_layer_student_has_no_pair_left_unless_the_last_counts():
    one = features([states([[0, 0], [0, 0]]), states([[1, 0], [0, 1]])])
    with pytest.raises(AlembertError, match="no layer pair left") as err:
        pkd(one, TEACHER)
    assert "\n" not in str(err.value)
    assert pkd(one, TEACHER, include_last=True) >= 0.0


def test_the_recipe_mixes_hard_soft_and_patient_terms():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["recipe=pkd", "kd.alpha=0.3", "kd.temperature=5"])
    recipe = from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True)).recipe
    (stage,) = recipe.stages
    hard, soft, patient = stage.terms
    assert (hard.name, hard.weight) == ("hard", 0.3)
    assert (soft.name, soft.weight) == ("kd", pytest.approx(0.7))
    assert soft.params == {"temperature": 5.0, "scale_by_t2": True}
    assert patient.name == "pkd" and patient.weight == 10.0 and patient.params == {"layers": "uniform"}
    assert LOSSES["pkd"].needs_hidden and LOSSES["pkd"].projected
