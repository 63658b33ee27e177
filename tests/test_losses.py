import math

import pytest
import torch
import torch.nn.functional as F

from alembert.errors import AlembertError
from alembert.training import KDConfig
from distill.losses import Objective, Term, kd_objective, register, soft_targets
from alembert.tasks import task_named
from distill.models import Features

CLASSIFICATION = task_named("classification")


def _features(logits, labels=None, task="classification"):
    logits = torch.as_tensor(logits, dtype=torch.float32)
    return Features(logits=logits, attention_mask=torch.ones(logits.shape[0], 3, dtype=torch.long),
                    labels=None if labels is None else torch.as_tensor(labels), task=task_named(task))


def test_soft_target_loss_matches_a_hand_computation():
    student, teacher, temperature = [[1.0, 2.0, 0.5]], [[2.0, 0.0, 1.0]], 2.0

    def softmax(row):
        exps = [math.exp(v / temperature) for v in row]
        return [e / sum(exps) for e in exps]

    p_teacher, p_student = softmax(teacher[0]), softmax(student[0])
    kl = sum(t * math.log(t / s) for t, s in zip(p_teacher, p_student))
    value = soft_targets(torch.tensor(student), torch.tensor(teacher), temperature)
    assert value.item() == pytest.approx(kl * temperature**2, rel=1e-5)
    unscaled = soft_targets(torch.tensor(student), torch.tensor(teacher), temperature, scale_by_t2=False)
    assert unscaled.item() == pytest.approx(kl, rel=1e-5)


def test_kd_objective_mixes_hard_and_soft_by_alpha():
    student = _features([[1.0, -1.0], [0.2, 0.3]], labels=[1, 0])
    teacher = _features([[0.5, 0.5], [2.0, -2.0]])
    total, parts = kd_objective(KDConfig(temperature=3.0, alpha=0.25), task=task_named("classification"))(student, teacher)
    hard = F.cross_entropy(student.logits, student.labels).item()
    soft = soft_targets(student.logits, teacher.logits, 3.0).item()
    assert parts == pytest.approx({"hard": hard, "kd": soft})
    assert total.item() == pytest.approx(0.25 * hard + 0.75 * soft, rel=1e-6)


def test_soft_target_gradients_keep_their_magnitude_across_temperatures():
    torch.manual_seed(0)
    teacher = torch.randn(64, 5) * 0.5
    student_init = torch.randn(64, 5) * 0.5
    norms = []
    for temperature in (2.0, 4.0, 8.0, 16.0):
        student = student_init.clone().requires_grad_(True)
        soft_targets(student, teacher, temperature).backward()
        norms.append(student.grad.norm().item())
    # Without T^2 the gradient shrinks like 1/T^2 (a factor of 64 from T=2 to T=16); with it, it stays put.
    assert max(norms) / min(norms) < 1.2


def test_regression_distils_with_mse():
    student = _features([[0.5], [1.5]], labels=[1.0, 1.0], task="regression")
    teacher = _features([[1.0], [1.0]], task="regression")
    total, parts = kd_objective(KDConfig(alpha=0.5), task=task_named("regression"))(student, teacher)
    assert set(parts) == {"hard", "logit_mse"}
    assert parts["logit_mse"] == pytest.approx(0.25)
    assert total.item() == pytest.approx(0.5 * 0.25 + 0.5 * 0.25)


def test_bad_kd_settings_and_unknown_terms_are_refused():
    with pytest.raises(AlembertError, match="alpha"):
        kd_objective(KDConfig(alpha=1.5), task=task_named("classification"))
    with pytest.raises(AlembertError, match="temperature"):
        kd_objective(KDConfig(temperature=0.0), task=task_named("classification"))
    with pytest.raises(AlembertError, match="unknown loss term"):
        Objective((Term("no_such_term", 1.0),))


def test_registry_refuses_duplicates():
    with pytest.raises(AlembertError, match="the loss term 'kd' is registered twice"):
        register("kd")(lambda student, teacher, *, mask=None: student.logits.sum())


def test_nan_loss_stops_with_the_step_and_the_term(tiny_dir):
    from alembert.data import DataConfig, loader
    from alembert.training import TrainConfig
    from distill.engine import fit
    from alembert.errors import AlembertError
    from distill.losses import LOSSES, LossSpec
    from alembert.modeldir import load_classifier, load_tokenizer

    LOSSES.add("always_nan", LossSpec(lambda student, teacher, *, mask: student.logits.sum() * float("nan"), needs_teacher=False))
    try:
        model, _ = load_classifier(str(tiny_dir("bert")))
        tokenizer = load_tokenizer(str(tiny_dir("bert")))
        from alembert.data import Example
        rows = CLASSIFICATION.encode([Example("the movie was good", None, 1)] * 4, tokenizer, DataConfig(max_length=16))
        data = loader(rows, tokenizer, batch_size=2, task=task_named("classification"))
        with pytest.raises(AlembertError, match=r"nan at step 0 \(epoch 1\) in term 'always_nan'"):
            fit(model, data, None, Objective((Term("always_nan", 1.0),)), TrainConfig(epochs=1))
    finally:
        LOSSES.remove("always_nan")
