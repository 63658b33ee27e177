"""student.kind=bilstm|cnn|static: padding never changes an output, save/load keeps the logits, the ONNX bundle holds
parity and the predictor answers, the teacher-derived word tables are what PCA gives, and what a small student cannot
do is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from alembert.modeldir import load_model_dir, save_model
from alembert.students import MODELS
from alembert.training import TrainConfig
from compress.passes.layers import DropLayersConfig
from compress.passes.quantize import QuantizeDynamicConfig
from compress.passes.vocab import PruneVocabConfig
from compress.registry import apply
from conftest import tiny_config, tiny_tokenizer
from distill.models import StudentConfig, build_student
from distill.recipes import RecipeConfig, StageConfig, TermConfig
from distill.students import output_table
from export.bundle import export_model
from export.config import ExportConfig, LatencyConfig, ParityConfig
from export.runtime import Predictor
from pipeline.run import FinetuneConfig, RunConfig, run, setup
from test_compress import assert_round_trip
from tests.compress_cases import in_model_ids

KINDS = ("bilstm", "cnn", "static")
TEXTS = ["the movie was brilliant but the ending was dull", "not bad", "a long , dull film"]
SMALL = {"bilstm": {"embedding_dim": 16, "hidden_size": 8, "head_size": 8}, "cnn": {"embedding_dim": 16, "filters": 4, "head_size": 8},
         "static": {"embedding_dim": 16, "head_size": 8}}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("small-tok"))


@pytest.fixture(scope="module")
def teacher(tokenizer):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config("bert", len(tokenizer), 2)).eval()


def student(kind: str, teacher, tokenizer, **settings):
    torch.manual_seed(0)
    config = StudentConfig(kind=kind, settings=SMALL[kind] | settings)
    return build_student(teacher, config, teacher_tokenizer=tokenizer).eval()


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def encoded(tokenizer, texts=TEXTS) -> dict:
    return {k: v for k, v in tokenizer(texts, padding=True, return_tensors="pt").items() if k != "token_type_ids"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_texts_logits_do_not_depend_on_the_padding_of_its_batch(kind, teacher, tokenizer):
    model = student(kind, teacher, tokenizer)
    together = logits(model, encoded(tokenizer))
    alone = torch.cat([logits(model, encoded(tokenizer, [text])) for text in TEXTS])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_small_student_reloads_with_identical_logits_and_exports_within_tolerance(kind, teacher, tokenizer, tmp_path):
    model = student(kind, teacher, tokenizer)
    batch = encoded(tokenizer)
    reloaded = load_model_dir(save_model(model, tokenizer, tmp_path / "student"))
    assert type(reloaded) is MODELS[model.config.model_type][1]
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), rtol=0, atol=0)
    config = ExportConfig(variants=("optimized", "int8_dynamic"), parity=ParityConfig(batch_sizes=(1, 3), max_lengths=(16,), samples=4),
                          latency=LatencyConfig(runs=2, warmup=1))
    bundle = export_model(model, tokenizer, tmp_path / "bundle", config)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["variants"]["fp32"]["max_abs_diff"] < 1e-4
    answers = Predictor(bundle).predict(TEXTS)
    assert [answer["label"] for answer in answers] == [model.config.id2label[i] for i in logits(model, batch).argmax(-1).tolist()]
    assert all(np.isclose(sum(answer["probabilities"].values()), 1.0) for answer in answers)


def gram(rows: torch.Tensor) -> torch.Tensor:
    """Row-by-row inner products: what a PCA keeps exactly at full width, whatever the signs of its components."""
    centred = rows.double() - rows.double().mean(0)
    return centred @ centred.T


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_the_word_table_is_the_teachers_input_table_by_pca(kind, teacher, tokenizer):
    full = student(kind, teacher, tokenizer, embedding_dim=32)  # the teacher's width: PCA keeps every distance
    torch.testing.assert_close(gram(full.embeddings.weight), gram(teacher.get_input_embeddings().weight), rtol=0, atol=1e-4)
    narrow = student(kind, teacher, tokenizer, embedding_dim=4)
    variances = narrow.embeddings.weight.double().var(0)
    assert narrow.embeddings.weight.shape == (len(tokenizer), 4) and torch.all(variances[:-1] >= variances[1:])


def test_the_static_table_is_each_tokens_teacher_output_by_pca(teacher, tokenizer):
    ids = torch.tensor([[tokenizer.cls_token_id, token, tokenizer.sep_token_id] for token in range(len(tokenizer))])
    with torch.no_grad():
        by_hand = teacher.bert(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 1]
    torch.testing.assert_close(gram(output_table(teacher, 32, tokenizer)), gram(by_hand), rtol=0, atol=1e-4)
    model = student("static", teacher, tokenizer, embedding_dim=32)
    torch.testing.assert_close(gram(model.embeddings.weight), gram(by_hand), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("settings", "message"), [
    ({"embedding_dim": 64}, "embedding_dim=64 is wider than the teacher's 32-wide word table"),
    ({"hidden": 8}, r"unknown config key\(s\) student.settings.hidden .*valid keys there are: .*hidden_size"),
    ({"dropout": 1.5}, r"student.settings.dropout=1.5 is above the maximum 0.9"),
])
def test_bad_small_student_settings_are_one_line(settings, message, teacher, tokenizer):
    with pytest.raises(AlembertError, match=message):
        build_student(teacher, StudentConfig(kind="bilstm", settings=settings), teacher_tokenizer=tokenizer)


def test_an_unknown_kind_names_the_known_ones(teacher, tokenizer):
    with pytest.raises(AlembertError, match="unknown student kind 'gru'.*bilstm"):
        build_student(teacher, StudentConfig(kind="gru"), teacher_tokenizer=tokenizer)


def test_int8_and_vocabulary_pruning_work_on_a_small_student_and_layer_passes_refuse_it(teacher, tokenizer, tmp_path):
    model = student("cnn", teacher, tokenizer)
    batch = encoded(tokenizer)
    pruned = apply(model, PruneVocabConfig(), batches=[batch], tokenizer=tokenizer)
    assert pruned.embeddings.num_embeddings < len(tokenizer)
    assert_round_trip(apply(pruned, QuantizeDynamicConfig()), tokenizer, in_model_ids(pruned, batch), tmp_path / "int8")
    with pytest.raises(AlembertError, match="does not support the 'alembert-cnn' model family"):
        apply(student("cnn", teacher, tokenizer), DropLayersConfig(count=1))


def run_config(teacher_dir, cache, kind: str, **changes) -> RunConfig:
    base = dict(teacher=str(teacher_dir), data=DataConfig(demo=DemoConfig(train_size=96, dev_size=32, test_size=32), max_length=16),
                recipe=RecipeConfig(stages=(StageConfig(terms=(TermConfig("kd", 1.0, {"temperature": 2.0}),)),)),
                student=StudentConfig(kind=kind, settings=SMALL[kind]), train=TrainConfig(epochs=2, batch_size=16, lr=3e-3),
                finetune=FinetuneConfig(mode="always", cache_dir=str(cache), train=TrainConfig(epochs=1, batch_size=16)),
                baseline=False, latency_seq_len=8)
    return RunConfig(**(base | changes))


def test_python_m_distill_trains_a_static_student_with_kd_and_saves_it(tiny_dir, tmp_path):
    rows = run(run_config(tiny_dir("bert", 2), tmp_path / "cache", "static"), tmp_path / "out")
    assert [row["model"] for row in rows] == ["teacher", "student (KD)"] and rows[1]["layers"] == 0
    saved = load_model_dir(tmp_path / "out" / "student")
    assert saved.config.model_type == "alembert-static" and saved.config.embedding_dim == 16
    assert rows[1]["params"] == sum(p.numel() for p in saved.parameters())


def test_layer_wise_terms_and_layerdrop_are_refused_for_a_small_student_before_any_model_loads(tmp_path):
    tinybert = RecipeConfig(stages=(StageConfig(terms=(TermConfig("tinybert_hidden", 1.0), TermConfig("kd", 1.0))),))
    with pytest.raises(AlembertError, match="student.kind=bilstm has no transformer layers.*tinybert_hidden"):
        setup(run_config(tmp_path / "missing", tmp_path, "bilstm", recipe=tinybert))
    with pytest.raises(AlembertError, match="student.kind=cnn has no transformer layers.*LayerDrop"):
        setup(run_config(tmp_path / "missing", tmp_path, "cnn", train=TrainConfig(layerdrop=0.2)))
