"""Compression keeps a token-classification (NER) head: every pass, ALBERT conversion, Taylor, recovery and the CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config, tiny_tokenizer
from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification

from alembert import demo_ner
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from alembert.modeldir import load_model_dir
from alembert.tagging import IGNORED
from alembert.tasks import TASKS, task_named
from alembert.tasks.base import Task
from alembert.training import TrainConfig
from compress.cli import task_loaders
from compress.passes.layers import DropLayersConfig
from compress.passes.prune import PruneFfnConfig, PruneHeadsConfig, group_scores
from compress.passes.share import ShareLayersConfig
from compress.pipeline import RecoveryConfig, Step, run_pipeline
from compress.registry import apply, pass_names
from compress.saving import INT8_WEIGHTS, load_compressed, save_compressed
from distill.recovery import kd_recovery
from tests.compress_cases import CASES, check_head, in_model_ids, linear_weight, real_tokens

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
TOKEN = task_named("token_classification")
DEMO_TAGS = TOKEN.label_names(row[2] for row in demo_ner.generate(DemoConfig(train_size=400))["train"])
NER_DATA = DataConfig(task="demo", task_type="token_classification", text_column="tokens", label_column="tags",
                      max_length=32, demo=DemoConfig(train_size=48, dev_size=16, test_size=8))

# Every registered pass, with how it may treat the classifier: "same" weights, a subset of its input "columns"
# (the hidden size shrinks), or a new number format ("int8", "fp16").


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("ner-compress-tok"))


def token_model(tokenizer, family: str = "bert", tags: tuple[str, ...] = TAGS, layers: int = 4):
    config = tiny_config(family, len(tokenizer), layers)
    config.num_labels = len(tags)
    config.id2label, config.label2id = dict(enumerate(tags)), {tag: i for i, tag in enumerate(tags)}
    config.problem_type = "token_classification"
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_config(config).eval()


@pytest.fixture(scope="module")
def batch(tokenizer):
    """Two right-padded sentences of different lengths."""
    return dict(tokenizer(["angela merkel met john smith in paris on monday", "rome"], padding=True, return_tensors="pt"))


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits.float()


def classifier_weight(model) -> torch.Tensor:
    return linear_weight(model.classifier)


def test_the_cases_cover_every_registered_pass():
    assert set(CASES) == set(pass_names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_pass_keeps_the_token_head_and_reloads_as_a_token_model(name, tokenizer, batch, tmp_path):
    config, head = CASES[name]
    original = token_model(tokenizer)
    before = classifier_weight(original).clone()
    model = apply(copy.deepcopy(original), config, batches=[batch], tokenizer=tokenizer)
    batch = in_model_ids(model, batch)
    out = logits(model, batch)
    assert out.shape == (2, batch["input_ids"].shape[1], len(TAGS)) and torch.isfinite(out).all()
    weight = classifier_weight(model)
    assert weight.shape == (len(TAGS), model.config.hidden_size)
    check_head(weight, before, head)
    save_compressed(model, tokenizer, tmp_path / name)
    reloaded = load_compressed(tmp_path / name)
    assert type(reloaded).__name__.endswith("ForTokenClassification")
    torch.testing.assert_close(logits(reloaded, batch), out, rtol=0, atol=1e-6)
    if not (tmp_path / name / INT8_WEIGHTS).exists():
        stock = AutoModelForTokenClassification.from_pretrained(tmp_path / name)
        torch.testing.assert_close(logits(stock, batch), out, rtol=0, atol=1e-6)
        ours = load_model_dir(tmp_path / name)
        assert type(ours) is type(model)
        torch.testing.assert_close(logits(ours, batch), out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_albert_conversion_of_a_token_model_is_exact_and_keeps_the_head(family, tokenizer, batch, tmp_path):
    model = token_model(tokenizer, family)
    albert = apply(copy.deepcopy(model), ShareLayersConfig(groups=4))
    assert type(albert).__name__ == "AlbertForTokenClassification" and albert.config.problem_type == "token_classification"
    assert torch.equal(albert.classifier.weight, model.classifier.weight) and albert.albert.pooler is None
    # RoBERTa gives padding its own position row, which ALBERT has not: exact at every real token, as PITFALLS says
    torch.testing.assert_close(real_tokens(logits(albert, batch), batch), real_tokens(logits(model, batch), batch),
                               rtol=0, atol=1e-6)
    regrouped = apply(copy.deepcopy(albert), ShareLayersConfig(groups=2))
    assert type(regrouped).__name__ == "AlbertForTokenClassification" and regrouped.config.num_hidden_groups == 2
    save_compressed(regrouped, tokenizer, tmp_path / "albert")
    stock = AutoModelForTokenClassification.from_pretrained(tmp_path / "albert")
    assert type(stock).__name__ == "AlbertForTokenClassification"
    torch.testing.assert_close(logits(stock, batch), logits(regrouped, batch), rtol=0, atol=1e-6)


def test_a_token_head_whose_config_names_another_task_is_refused_in_one_line(tokenizer):
    model = token_model(tokenizer)
    model.config.problem_type = None  # plain transformers leaves it unset: the config then says "classification"
    with pytest.raises(AlembertError, match="BertForTokenClassification does not map onto AlbertForSequenceClassification"
                                            ".*give config.problem_type the task"):
        apply(model, ShareLayersConfig(groups=4))


@pytest.fixture(scope="module")
def ner_data(tokenizer):
    return task_loaders(NER_DATA, tokenizer, token_model(tokenizer, tags=DEMO_TAGS), batch_size=8)


def test_taylor_importance_reads_token_batches(tokenizer, ner_data):
    first = next(iter(ner_data.train))
    assert first["labels"].dim() == 2 and (first["labels"] == IGNORED).any()  # [batch, seq], -100 on ignored pieces
    model = token_model(tokenizer, tags=DEMO_TAGS)
    taylor = apply(copy.deepcopy(model), PruneHeadsConfig(ratio=0.5, importance="taylor", taylor_batches=2),
                   batches=ner_data.train)
    magnitude = apply(copy.deepcopy(model), PruneHeadsConfig(ratio=0.5))
    assert taylor.config.alembert_compression[-1]["removed"] != magnitude.config.alembert_compression[-1]["removed"]
    assert all(p.grad is None for p in taylor.parameters())
    ffn = apply(copy.deepcopy(model), PruneFfnConfig(ratio=0.5, importance="taylor", taylor_batches=2), batches=ner_data.train)
    assert ffn.config.intermediate_size == 32 and torch.equal(ffn.classifier.weight, model.classifier.weight)


def test_taylor_scores_are_finite_and_batches_without_labelled_tokens_are_refused(tokenizer, ner_data):
    """The task's loss skips -100; batches with no labelled token give no gradient, which would make the scores NaN."""
    batch = next(iter(ner_data.train))
    model = token_model(tokenizer, tags=DEMO_TAGS)
    roots = [layer.intermediate.dense for layer in model.bert.encoder.layer]
    taylor = PruneFfnConfig(importance="taylor", taylor_batches=1)
    _, scores = group_scores(model, taylor, [batch], "prune_ffn", roots)
    assert all(torch.isfinite(s).all() and s.abs().sum() > 0 for s in scores)
    unlabelled = {**batch, "labels": torch.full_like(batch["labels"], IGNORED)}
    with pytest.raises(AlembertError, match="got no gradient from 1 batch.*none has a labelled row or token"):
        apply(model, taylor, batches=[unlabelled])


def test_recovery_distils_a_compressed_token_model_and_the_report_uses_entity_f1(tokenizer, ner_data, tmp_path):
    model = token_model(tokenizer, tags=DEMO_TAGS)
    steps = [DropLayersConfig(count=2), Step(PruneFfnConfig(ratio=0.5), recover=True)]
    recovery = RecoveryConfig(at_end=False, train=TrainConfig(epochs=1, batch_size=8, lr=1e-3))
    final, rows = run_pipeline(model, tokenizer, steps, data=ner_data, recovery=recovery, out_dir=tmp_path, seq_len=16,
                               distiller=kd_recovery)
    assert [r["step"] for r in rows] == ["input", "drop_layers", "prune_ffn", "prune_ffn + recovery"]
    assert all(r["metric_name"] == "f1" and 0.0 <= r["metric"] <= 1.0 for r in rows)
    assert rows[-1]["logit_drift"] > 0  # recovery trained the model
    dev_batch = {k: v for k, v in next(iter(ner_data.dev)).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    stock = AutoModelForTokenClassification.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(logits(stock, dev_batch), logits(final, dev_batch), rtol=0, atol=1e-6)


def test_drift_is_measured_on_real_tokens_only(tokenizer, ner_data, tmp_path):
    """RoBERTa -> ALBERT is exact on real tokens; padding outputs, which no task reads, are not drift."""
    model = token_model(tokenizer, "roberta", tags=DEMO_TAGS)
    reference = next(iter(ner_data.dev))
    assert (reference["attention_mask"] == 0).any()
    _, rows = run_pipeline(model, tokenizer, [ShareLayersConfig(groups=4)], data=ner_data, seq_len=8)
    assert rows[1]["logit_drift"] < 1e-5 and rows[1]["metric"] == rows[0]["metric"]


@dataclass(frozen=True)
class SpanTask(Task):
    """A stand-in extractive-QA task: start and end logits, labels [batch, 2] (start, end)."""

    @property
    def model_class(self):
        return AutoModelForQuestionAnswering

    def output_logits(self, outputs) -> torch.Tensor:
        return torch.stack([outputs.start_logits, outputs.end_logits], dim=-1)

    def head_kwargs(self, label_names):
        return {"problem_type": self.problem_type}

    def hard_loss(self, logits, labels):
        return (F.cross_entropy(logits[..., 0], labels[:, 0]) + F.cross_entropy(logits[..., 1], labels[:, 1])) / 2


def test_a_qa_head_needs_only_its_task_entry(tokenizer, batch, tmp_path):
    span = SpanTask(name="span_test", problem_type="span_test", decoder="span", primary_metric="f1", summary_columns=(),
                    label_dtype=torch.long)
    config = tiny_config("bert", len(tokenizer))
    config.num_labels, config.problem_type = 2, "span_test"
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_config(config).eval()
    head = model.qa_outputs.weight.detach().clone()
    batches = [{**batch, "labels": torch.tensor([[1, 3], [0, 1]]), "index": torch.arange(2)}]
    with TASKS.temporarily("span_test", span):
        pruned = apply(model, PruneFfnConfig(ratio=0.5, importance="taylor"), batches=batches)
        albert = apply(copy.deepcopy(pruned), ShareLayersConfig(groups=4))
        save_compressed(albert, tokenizer, tmp_path / "qa")
        reloaded = load_compressed(tmp_path / "qa")
    assert type(albert).__name__ == "AlbertForQuestionAnswering" and torch.equal(albert.qa_outputs.weight, head)
    expected = span.output_logits(pruned(**batch))
    torch.testing.assert_close(span.output_logits(albert(**batch)), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(span.output_logits(reloaded(**batch)), expected, rtol=0, atol=1e-6)


def test_python_m_compress_runs_on_the_ner_demo(tokenizer, tmp_path):
    directory = tmp_path / "ner-model"
    token_model(tokenizer, tags=DEMO_TAGS).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    passes = "passes=[{name: prune_heads, importance: taylor, taylor_batches: 2}, prune_ffn, share_layers]"
    command = [sys.executable, "-m", "compress", f"model={directory}", "data=ner", "data.task=demo",
               "data.demo.train_size=32", "data.demo.dev_size=16", "data.demo.test_size=4", "data.max_length=32",
               "batch_size=8", "seq_len=8", passes, "recovery.at_end=true", "recovery.train.epochs=1",
               "recovery.train.batch_size=8", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "run" / "compress_report.json").read_text())
    assert [r["step"] for r in rows] == ["input", "prune_heads", "prune_ffn", "share_layers", "share_layers + recovery"]
    assert all(r["metric_name"] == "f1" for r in rows) and " | f1=" in done.stdout
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "run" / "model")
    assert type(model).__name__ == "AlbertForTokenClassification"
    assert tuple(model.config.id2label[i] for i in range(model.config.num_labels)) == DEMO_TAGS
