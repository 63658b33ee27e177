"""Compression keeps an extractive-QA head: every pass, ALBERT conversion, Taylor, recovery and the CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_tokenizer
from transformers import AutoModelForQuestionAnswering

from alembert import demo_qa
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.modeldir import load_model_dir
from alembert.tagging import IGNORED
from alembert.tasks import task_named
from alembert.training import TrainConfig
from compress.cli import task_loaders
from compress.passes.layers import DropLayersConfig
from compress.passes.prune import PruneFfnConfig, PruneHeadsConfig
from compress.passes.share import ShareLayersConfig
from compress.pipeline import RecoveryConfig, Step, run_pipeline
from compress.registry import apply, pass_names
from compress.saving import INT8_WEIGHTS, load_compressed, save_compressed
from distill.recovery import kd_recovery
from tests.compress_cases import CASES, check_head, in_model_ids, linear_weight, real_tokens

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]
QA = task_named("question_answering")
QA_DATA = DataConfig(task="demo", task_type="question_answering", text_column="question", text_pair_column="context",
                     label_column="answers", max_length=64, doc_stride=16,
                     demo=DemoConfig(train_size=32, dev_size=12, test_size=4))

# Every registered pass, with how it may treat the span head: "same" weights, a subset of its input "columns"
# (the hidden size shrinks), or a new number format ("int8", "fp16"). Never fewer than 2 outputs.


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("qa-compress-tok"), extra=tuple(demo_qa.vocabulary()))


def qa_model(tokenizer, family: str = "bert", layers: int = 4):
    """A tiny span model as python -m distill builds one: 2 outputs (start, end), problem_type question_answering."""
    config = tiny_config(family, len(tokenizer), layers)
    config.num_labels = 2
    config.id2label, config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    config.problem_type = "question_answering"
    torch.manual_seed(0)
    return AutoModelForQuestionAnswering.from_config(config).eval()


@pytest.fixture(scope="module")
def batch(tokenizer):
    """Two right-padded (question, context) pairs of different lengths, with token type ids."""
    questions = ["who founded acme ?", "where is acme based ?"]
    contexts = ["wei chen bought acme in 1987 . maria garcia founded acme in 1990 .", "acme is based in paris ."]
    return dict(tokenizer(questions, contexts, padding=True, return_tensors="pt"))


def spans(model, batch) -> torch.Tensor:
    """[rows, tokens, 2]: start and end logits, as the task reads them."""
    with torch.no_grad():
        return QA.output_logits(model.eval()(**batch)).float()


def head_weight(model) -> torch.Tensor:
    return linear_weight(model.qa_outputs)


def test_the_cases_cover_every_registered_pass():
    assert set(CASES) == set(pass_names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_pass_keeps_the_span_head_and_reloads_as_a_qa_model(name, tokenizer, batch, tmp_path):
    config, head = CASES[name]
    original = qa_model(tokenizer)
    before = head_weight(original).clone()
    model = apply(copy.deepcopy(original), config, batches=[batch], tokenizer=tokenizer)
    batch = in_model_ids(model, batch)
    out = spans(model, batch)
    assert out.shape == (2, batch["input_ids"].shape[1], 2) and torch.isfinite(out).all()
    weight = head_weight(model)
    assert weight.shape == (2, model.config.hidden_size)  # start and end: never pruned
    check_head(weight, before, head)
    save_compressed(model, tokenizer, tmp_path / name)
    reloaded = load_compressed(tmp_path / name)
    assert type(reloaded).__name__.endswith("ForQuestionAnswering")
    assert reloaded.config.problem_type == "question_answering"
    torch.testing.assert_close(spans(reloaded, batch), out, rtol=0, atol=1e-6)
    if not (tmp_path / name / INT8_WEIGHTS).exists():
        stock = AutoModelForQuestionAnswering.from_pretrained(tmp_path / name)
        with torch.no_grad():
            outputs = stock.eval()(**batch)
        assert outputs.start_logits.shape == outputs.end_logits.shape == batch["input_ids"].shape
        torch.testing.assert_close(spans(stock, batch), out, rtol=0, atol=1e-6)
        ours = load_model_dir(tmp_path / name)
        assert type(ours) is type(model)
        torch.testing.assert_close(spans(ours, batch), out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_albert_conversion_of_a_qa_model_is_exact_and_keeps_the_head(family, tokenizer, batch, tmp_path):
    model = qa_model(tokenizer, family)
    albert = apply(copy.deepcopy(model), ShareLayersConfig(groups=4))
    assert type(albert).__name__ == "AlbertForQuestionAnswering" and albert.config.problem_type == "question_answering"
    assert torch.equal(albert.qa_outputs.weight, model.qa_outputs.weight)
    assert torch.equal(albert.qa_outputs.bias, model.qa_outputs.bias)
    # RoBERTa gives padding its own position row, which ALBERT has not: exact at every real token
    torch.testing.assert_close(real_tokens(spans(albert, batch), batch), real_tokens(spans(model, batch), batch),
                               rtol=0, atol=1e-6)
    regrouped = apply(copy.deepcopy(albert), ShareLayersConfig(groups=2))
    assert type(regrouped).__name__ == "AlbertForQuestionAnswering" and regrouped.config.num_hidden_groups == 2
    save_compressed(regrouped, tokenizer, tmp_path / "albert")
    stock = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "albert")
    assert type(stock).__name__ == "AlbertForQuestionAnswering"
    torch.testing.assert_close(spans(stock, batch), spans(regrouped, batch), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def qa_data(tokenizer):
    return task_loaders(QA_DATA, tokenizer, qa_model(tokenizer), batch_size=8)


def test_taylor_importance_reads_window_batches(tokenizer, qa_data):
    first = next(iter(qa_data.train))
    labels = first["labels"]
    assert labels.shape == (first["input_ids"].shape[0], first["input_ids"].shape[1] + 1)  # window row, then roles
    assert torch.equal(labels[:, 0], first["index"]) and (labels[:, 1:] == IGNORED).any()
    model = qa_model(tokenizer)
    taylor = apply(copy.deepcopy(model), PruneHeadsConfig(ratio=0.5, importance="taylor", taylor_batches=2),
                   batches=qa_data.train)
    magnitude = apply(copy.deepcopy(model), PruneHeadsConfig(ratio=0.5))
    assert taylor.config.alembert_compression[-1]["removed"] != magnitude.config.alembert_compression[-1]["removed"]
    assert all(p.grad is None for p in taylor.parameters())
    ffn = apply(copy.deepcopy(model), PruneFfnConfig(ratio=0.5, importance="taylor", taylor_batches=2), batches=qa_data.train)
    assert ffn.config.intermediate_size == 32 and torch.equal(ffn.qa_outputs.weight, model.qa_outputs.weight)


def test_recovery_distils_a_compressed_qa_model_and_the_report_uses_squad_f1(tokenizer, qa_data, tmp_path):
    model = qa_model(tokenizer)
    steps = [DropLayersConfig(count=2), Step(PruneFfnConfig(ratio=0.5), recover=True)]
    recovery = RecoveryConfig(at_end=False, train=TrainConfig(epochs=1, batch_size=8, lr=1e-3))
    final, rows = run_pipeline(model, tokenizer, steps, data=qa_data, recovery=recovery, out_dir=tmp_path, seq_len=16,
                               distiller=kd_recovery)
    assert [r["step"] for r in rows] == ["input", "drop_layers", "prune_ffn", "prune_ffn + recovery"]
    assert all(r["metric_name"] == "f1" and 0.0 <= r["metric"] <= 1.0 for r in rows)
    assert rows[-1]["logit_drift"] > 0  # recovery trained the model
    assert type(final).__name__ == "BertForQuestionAnswering" and final.config.num_hidden_layers == 2
    dev_batch = {k: v for k, v in next(iter(qa_data.dev)).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    stock = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(spans(stock, dev_batch), spans(final, dev_batch), rtol=0, atol=1e-6)


def test_python_m_compress_runs_on_the_qa_demo(tokenizer, tmp_path):
    directory = tmp_path / "qa-model"
    qa_model(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    passes = "passes=[{name: prune_heads, importance: taylor, taylor_batches: 2}, prune_ffn, share_layers]"
    command = [sys.executable, "-m", "compress", f"model={directory}", "data=qa", "data.task=demo",
               "data.demo.train_size=32", "data.demo.dev_size=12", "data.demo.test_size=4", "data.max_length=64",
               "data.doc_stride=16", "batch_size=8", "seq_len=8", passes, "recovery.at_end=true",
               "recovery.train.epochs=1", "recovery.train.batch_size=8", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "run" / "compress_report.json").read_text())
    assert [r["step"] for r in rows] == ["input", "prune_heads", "prune_ffn", "share_layers", "share_layers + recovery"]
    assert all(r["metric_name"] == "f1" and 0.0 <= r["metric"] <= 1.0 for r in rows) and " | f1=" in done.stdout
    model = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "run" / "model")
    assert type(model).__name__ == "AlbertForQuestionAnswering" and model.config.problem_type == "question_answering"
    assert model.qa_outputs.weight.shape == (2, model.config.hidden_size)
