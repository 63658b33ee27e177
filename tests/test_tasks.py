"""Tasks own what differs between kinds of task; stages ask them. Checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from alembert.config import from_dict
from alembert.data import DataConfig
from alembert.decoding import DECODERS
from alembert.errors import AlembertError
from alembert.modeldir import load_model_dir
from alembert.tasks import TASKS, task_named, task_of
from tests.conftest import tiny_config

CLASSIFICATION, REGRESSION = task_named("classification"), task_named("regression")


def test_the_registry_holds_each_task_once_and_refuses_unknown_names():
    assert {"classification", "regression"} <= set(TASKS.names())
    with pytest.raises(AlembertError, match=r"unknown task 'ner'; use one of: .*classification.*regression"):
        task_named("ner")
    with pytest.raises(AlembertError, match="task_type=ner is not one of classification, .*regression"):
        from_dict(DataConfig, {"task_type": "ner"})


def test_a_saved_model_says_its_task_through_problem_type(tmp_path):
    regression = AutoModelForSequenceClassification.from_config(_regression_config())
    regression.save_pretrained(tmp_path / "reg")
    assert task_of(load_model_dir(tmp_path / "reg").config) is REGRESSION
    assert task_of(BertConfig(num_labels=3)) is CLASSIFICATION  # no problem_type: inferred from the label count
    assert task_of(BertConfig(num_labels=1)) is REGRESSION


def _regression_config() -> BertConfig:
    config = tiny_config("bert", 50)
    config.num_labels, config.problem_type = 1, "regression"
    return config


def test_classification_metrics_and_agreement_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1, 1, 1])
    metrics = CLASSIFICATION.metrics(logits, labels)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx(0.8)  # precision 1, recall 2/3
    agreement = CLASSIFICATION.agreement(logits, torch.tensor([[1.0, 0.0]] * 4))
    assert agreement["agreement"] == pytest.approx(0.5)
    assert CLASSIFICATION.primary_metric in metrics


def test_regression_metrics_losses_and_mixture_by_hand():
    predictions, gold = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 2.0, 3.0])
    metrics = REGRESSION.metrics(predictions, gold)
    assert metrics["mse"] == pytest.approx(1 / 3)
    assert metrics["pearson"] == pytest.approx(float(np.corrcoef([1, 2, 4], [1, 2, 3])[0, 1]))
    assert REGRESSION.hard_loss(predictions, gold).item() == pytest.approx(1 / 3)
    assert REGRESSION.soft_loss(predictions, torch.tensor([[1.0], [2.0], [2.0]]), 4.0).item() == pytest.approx(4 / 3)
    assert REGRESSION.soft_term("kd") == "logit_mse" and CLASSIFICATION.soft_term("kd") == "kd"
    mixed = REGRESSION.mix([torch.tensor([[2.0]]), torch.tensor([[4.0]])], torch.tensor([0.25, 0.75]), 2.0)
    assert mixed.item() == pytest.approx(3.5)


def test_classification_soft_loss_is_hintons_kl_times_t_squared():
    student, teacher, temperature = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), 2.0
    p = torch.softmax(student / temperature, -1)[0]
    kl = sum(0.5 * math.log(0.5 / float(q)) for q in p)
    assert CLASSIFICATION.soft_loss(student, teacher, temperature).item() == pytest.approx(kl * 4, rel=1e-5)


def test_labels_are_parsed_by_the_task():
    assert CLASSIFICATION.label_names(["b", "a", "b"]) == ("a", "b")
    assert CLASSIFICATION.label_names(["10", "9"]) == ("9", "10")
    assert REGRESSION.label_names(["0.5"]) is None
    assert REGRESSION.parse_label("0.25", {}, "train row 1") == 0.25
    with pytest.raises(AlembertError, match="train row 3: label 'x' is not a finite number"):
        REGRESSION.parse_label("x", {}, "train row 3")
    with pytest.raises(AlembertError, match="label 'c' is not one of the training labels"):
        CLASSIFICATION.parse_label("c", {"a": 0, "b": 1}, "dev row 2")


def test_each_deployable_task_names_a_torch_free_decoder():
    for _, task in TASKS.items():
        assert task.decoder in DECODERS if task.deployable() else task.decoder is None
    assert not TASKS.get("masked_lm").deployable()
    result = DECODERS["softmax"](np.array([0.0, math.log(3.0)]), ["neg", "pos"])
    assert result["label"] == "pos" and result["probabilities"]["pos"] == pytest.approx(0.75)
    assert DECODERS["score"](np.array([0.5]), []) == {"score": 0.5}
    assert REGRESSION.onnx_outputs() == {"logits": {0: "batch"}}
