"""Head and FFN pruning, layer dropping and compaction on every family whose registry entry names the parts they
edit: each result round-trips through save/load with identical logits, and compaction keeps the logits."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert.compact import compact_for_export
from alembert.families import entry, prunable_families, prunable_layers, part, with_layer_list
from compress.passes.layers import DropLayersConfig
from compress.passes.prune import PruneFfnConfig, PruneHeadsConfig
from compress.registry import apply
from conftest import tiny_config, tiny_tokenizer
from test_compress import assert_round_trip
from test_family_pipeline import batch_for


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def make(model_type: str, tokenizer) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(model_type, len(tokenizer), 4)).eval()


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("model_type", prunable_families())
def test_ffn_pruning_narrows_every_layer_and_round_trips(model_type, tokenizer, tmp_path):
    model = apply(make(model_type, tokenizer), PruneFfnConfig(ratio=0.25))
    assert getattr(model.config, entry(model).ffn_key) == 48
    assert {part(model, layer, "ffn_in").out_features for layer in prunable_layers(model, "t")} == {48}
    assert_round_trip(model, tokenizer, batch_for(model, tokenizer), tmp_path / "model")


@pytest.mark.parametrize("model_type", prunable_families())
def test_head_pruning_then_compaction_keeps_the_logits(model_type, tokenizer, tmp_path):
    model = apply(make(model_type, tokenizer), PruneHeadsConfig(ratio=0.5, scope="global"))
    batch = batch_for(model, tokenizer)
    assert_round_trip(model, tokenizer, batch, tmp_path / "model")
    kept = model.config.alembert_compression[-1]["heads_per_layer"]
    compact = compact_for_export(copy.deepcopy(model))
    torch.testing.assert_close(logits(compact, batch), logits(model, batch), rtol=0, atol=1e-5)
    widths = [part(compact, layer, "query").out_features for layer in prunable_layers(compact, "t")]
    assert widths == ([heads * 8 for heads in kept] if entry(model).compact_heads else [32] * 4)


@pytest.mark.parametrize("model_type", with_layer_list())
def test_dropping_layers_keeps_the_named_ones(model_type, tokenizer, tmp_path):
    model = make(model_type, tokenizer)
    kept_weights = [layer.state_dict() for layer in (model.base_model.get_submodule(entry(model).layers)[i] for i in (0, 3))]
    dropped = apply(model, DropLayersConfig(strategy="explicit", layers=(1, 2)))
    assert getattr(dropped.config, entry(dropped).layer_count_key) == 2
    for layer, weights in zip(dropped.base_model.get_submodule(entry(dropped).layers), kept_weights):
        assert all(torch.equal(layer.state_dict()[key], value) for key, value in weights.items())
    assert_round_trip(dropped, tokenizer, batch_for(dropped, tokenizer), tmp_path / "model")
