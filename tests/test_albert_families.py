"""The ALBERT converter (share_layers, factorize_embeddings) on every family whose entry maps onto ALBERT: exact
wherever ALBERT can express the model, a measured head refit where it cannot (DistilBERT's ReLU, ELECTRA's GELU
sequence head), and the converted DistilBERT through save/load, export parity and the predictor."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoModelForTokenClassification

from alembert.errors import AlembertError
from alembert.families import supporting
from compress.albert_head import ridge
from compress.passes.factorize import FactorizeEmbeddingsConfig
from compress.passes.share import ShareLayersConfig
from compress.registry import apply
from conftest import tiny_config, tiny_tokenizer
from export.bundle import export_model
from export.config import ExportConfig, LatencyConfig, ParityConfig
from export.runtime import Predictor
from test_compress import assert_round_trip
from tests.compress_cases import CASES, in_model_ids

HEADS = {"token_classification": AutoModelForTokenClassification, "question_answering": AutoModelForQuestionAnswering,
         "single_label_classification": AutoModelForSequenceClassification}
REFITTED = {"distilbert": "relu", "electra": "gelu"}  # sequence heads with another activation than ALBERT's tanh
TEXTS = ["the movie was brilliant but the ending was dull", "not bad", "a dull , long film", "brilliant"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("albert-tok"))


def make(model_type: str, problem_type: str, tokenizer, *, embedding_size: int | None = None):
    torch.manual_seed(0)
    config = tiny_config(model_type, len(tokenizer))
    config.problem_type = problem_type
    if embedding_size is not None:
        config.embedding_size = embedding_size  # ELECTRA's narrower embeddings and their projection
    return HEADS[problem_type].from_config(config).eval()


def inputs(model, tokenizer, texts=TEXTS) -> dict:
    encoded = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    return encoded if model.config.model_type != "distilbert" else {k: v for k, v in encoded.items() if k != "token_type_ids"}


def batches(model, tokenizer, rows: int = 64) -> list[dict]:
    words = ["the", "movie", "was", "brilliant", "but", "ending", "dull", "not", "bad", "film", "long", "a"]
    generator = torch.Generator().manual_seed(1)
    texts = [" ".join(words[int(i)] for i in torch.randint(len(words), (int(n),), generator=generator))
             for n in torch.randint(2, 10, (rows,), generator=generator)]
    return [inputs(model, tokenizer, texts[start:start + 16]) for start in range(0, rows, 16)]


def outputs(model, batch) -> torch.Tensor:
    with torch.no_grad():
        found = model(**batch)
    return found.logits if hasattr(found, "logits") else torch.stack([found.start_logits, found.end_logits])


@pytest.mark.parametrize("problem_type", list(HEADS))
@pytest.mark.parametrize("model_type", supporting("albert"))
def test_one_group_per_layer_converts_exactly_where_albert_can_express_the_head(model_type, problem_type, tokenizer):
    model = make(model_type, problem_type, tokenizer, embedding_size=16 if model_type == "electra" else None)
    converted = apply(copy.deepcopy(model), ShareLayersConfig(groups=4), batches=batches(model, tokenizer))
    assert converted.config.model_type == "albert"
    batch = inputs(model, tokenizer)
    mask = batch["attention_mask"].bool()
    before, after = outputs(model, batch), outputs(converted, {**batch, "token_type_ids": torch.zeros_like(mask, dtype=torch.long)})
    refit = converted.config.alembert_compression[-1].get("head_refit")
    if problem_type == "single_label_classification" and model_type in REFITTED:
        assert refit["activation"] == REFITTED[model_type] and refit["rows"] == 48 and refit["held_out_rows"] == 16
        assert refit["logit_error_after"] < refit["logit_error_before"]
        return
    assert refit is None
    if problem_type == "token_classification":
        before, after = before[mask], after[mask]
    elif problem_type == "question_answering":
        before, after = before[:, mask], after[:, mask]
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


def test_electras_narrow_embeddings_become_albert_factorized_ones_exactly(tokenizer):
    model = make("electra", "token_classification", tokenizer, embedding_size=16)
    converted = apply(copy.deepcopy(model), FactorizeEmbeddingsConfig(embedding_size=16))
    assert converted.config.embedding_size == 16 and converted.albert.encoder.embedding_hidden_mapping_in.in_features == 16
    batch = inputs(model, tokenizer)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(outputs(converted, batch)[mask], outputs(model, batch)[mask], rtol=0, atol=1e-5)


def test_a_distilbert_sequence_model_without_task_data_is_refused_in_one_line(tokenizer):
    with pytest.raises(AlembertError, match="distilbert sequence model to ALBERT needs task data: its relu head"):
        apply(make("distilbert", "single_label_classification", tokenizer), ShareLayersConfig(groups=2))


def test_ridge_recovers_an_exact_linear_map():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 6, generator=generator, dtype=torch.float64)
    weight, bias = torch.randn(3, 6, generator=generator, dtype=torch.float64), torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    found_weight, found_bias = ridge(features, features @ weight.T + bias)
    torch.testing.assert_close(found_weight, weight, rtol=0, atol=1e-2)  # the ridge shrinks by ~1e-3 of the energy
    torch.testing.assert_close(found_bias, bias, rtol=0, atol=1e-2)


def test_a_shared_factorized_distilbert_round_trips_exports_within_tolerance_and_answers(tokenizer, tmp_path):
    model = make("distilbert", "single_label_classification", tokenizer)
    data = batches(model, tokenizer)
    shared = apply(apply(model, ShareLayersConfig(groups=2), batches=data), FactorizeEmbeddingsConfig(embedding_size=16), batches=data)
    history = shared.config.alembert_compression
    assert [entry["pass"] for entry in history] == ["share_layers", "factorize_embeddings"] and "head_refit" in history[0]
    assert len(shared.albert.encoder.albert_layer_groups) == 2 and shared.config.embedding_size == 16
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    assert_round_trip(shared, tokenizer, batch, tmp_path / "compressed")
    config = ExportConfig(variants=("optimized",), parity=ParityConfig(batch_sizes=(1, 2), max_lengths=(16,), samples=4),
                          latency=LatencyConfig(runs=2, warmup=1))
    bundle = export_model(shared, tokenizer, tmp_path / "bundle", config)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"fp32", "optimized"} <= set(manifest["variants"])
    expected = [shared.config.id2label[i] for i in outputs(shared, batch).argmax(-1).tolist()]
    assert [answer["label"] for answer in Predictor(bundle).predict(TEXTS)] == expected


@pytest.mark.parametrize("name", list(CASES))
def test_every_pass_runs_on_a_distilbert_sequence_model_and_round_trips(name, tokenizer, tmp_path):
    model = make("distilbert", "single_label_classification", tokenizer)
    data = batches(model, tokenizer)
    compressed = apply(model, CASES[name][0], batches=data, tokenizer=tokenizer)
    assert compressed.config.alembert_compression[-1]["pass"] == name
    batch = in_model_ids(compressed, inputs(model, tokenizer))
    assert_round_trip(compressed, tokenizer, batch, tmp_path / name)
