"""Every registered family end to end on a tiny random model: a 2-layer student from named teacher layers, the
layer-wise terms on its features, save/load with identical logits, an ONNX bundle within tolerance, the predictor."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert.families import transformer_families
from alembert.families.base import FAMILIES
from alembert.modeldir import load_model_dir, save_model
from conftest import tiny_config, tiny_tokenizer
from distill.losses import Objective, Term
from distill.models import StudentConfig, build_student, disable_attention_dropout, forward_features
from export.bundle import export_model
from export.config import ExportConfig, LatencyConfig, ParityConfig
from export.runtime import Predictor

TEXTS = ["the movie was brilliant but the ending was dull", "not bad"]
LAYERWISE = Objective((Term("tinybert_hidden", 1.0, (("layers", "uniform"),)), Term("tinybert_attention", 1.0, (("layers", "uniform"),)),
                       Term("minilm_attention", 1.0), Term("minilm_value", 1.0), Term("kd", 1.0)))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def batch_for(model, tokenizer) -> dict:
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters and getattr(model.config, "type_vocab_size", 1) > 0
    return {name: value for name, value in encoded.items() if name != "token_type_ids" or takes_types}


@pytest.fixture(scope="module", params=transformer_families())
def teacher(request, tokenizer):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(request.param, len(tokenizer), 4)).eval()


def test_layerwise_terms_run_on_the_student_and_teacher_features(teacher, tokenizer):
    student = build_student(teacher, StudentConfig(num_layers=2))
    disable_attention_dropout(student)
    batch = batch_for(teacher, tokenizer)
    features = [forward_features(model, batch, hidden=True, attentions=True, values=True) for model in (student, teacher)]
    for model, found in zip((student, teacher), features):
        layers = model.config.num_hidden_layers
        assert len(found.hidden_states) == layers + 1 and len(found.attentions) == len(found.values) == layers
        assert found.attentions[0].shape == (2, 4, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    loss, terms = LAYERWISE(*features)
    assert torch.isfinite(loss) and loss.requires_grad and set(terms) >= {"tinybert_hidden", "minilm_value"}
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_a_saved_student_reloads_with_identical_logits_and_exports_within_tolerance(teacher, tokenizer, tmp_path):
    student = build_student(teacher, StudentConfig(num_layers=2)).eval()
    batch = batch_for(teacher, tokenizer)
    directory = save_model(student, tokenizer, tmp_path / "student")
    with torch.no_grad():
        torch.testing.assert_close(load_model_dir(directory)(**batch).logits, student(**batch).logits, rtol=0, atol=1e-6)
    config = ExportConfig(variants=("optimized",), parity=ParityConfig(batch_sizes=(1, 2), max_lengths=(16,), samples=4),
                          latency=LatencyConfig(runs=2, warmup=1))
    bundle = export_model(student, tokenizer, tmp_path / "bundle", config)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("fp32", "optimized"):
        assert manifest["variants"][name]["max_abs_diff"] <= manifest["variants"][name]["tolerance"]
    if FAMILIES[student.config.model_type].ort_model_type is None:  # the manifest says why the graph is not fused
        assert "onnxruntime's optimizer has no attention fusion for" in manifest["variants"]["optimized"]["notes"][0]
    answers = Predictor(bundle).predict(TEXTS)
    with torch.no_grad():
        expected = student(**batch).logits.argmax(-1).tolist()
    names = [student.config.id2label[i] for i in expected]
    assert [answer["label"] for answer in answers] == names
    assert all(np.isclose(sum(answer["probabilities"].values()), 1.0) for answer in answers)
