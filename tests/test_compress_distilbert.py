"""DistilBERT through the structured passes its family entry enables: head, FFN and hidden pruning, layer dropping,
compaction for export and the ONNX bundle (the ALBERT-based passes refuse it: see test_compress)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert.compact import compact_for_export
from compress.passes.hidden import PruneHiddenConfig
from compress.passes.layers import DropLayersConfig
from compress.passes.prune import PruneFfnConfig, PruneHeadsConfig
from compress.registry import apply
from conftest import tiny_config, tiny_tokenizer
from export.bundle import export_model
from export.config import ExportConfig, LatencyConfig, ParityConfig
from test_compress import assert_round_trip, logits


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def batch(tokenizer):
    encoded = tokenizer(["the movie was brilliant but the ending was dull", "not bad"], padding=True, return_tensors="pt")
    return {name: encoded[name] for name in ("input_ids", "attention_mask")}  # DistilBERT takes no token types


def distilbert(tokenizer):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config("distilbert", len(tokenizer), 4)).eval()


@pytest.mark.parametrize(("config", "check"), [
    (PruneHeadsConfig(ratio=0.5), lambda m: m.config.alembert_compression[-1]["heads_per_layer"] == [2, 2, 2, 2]),
    (PruneFfnConfig(ratio=0.25), lambda m: m.config.hidden_dim == 48 and m.distilbert.transformer.layer[0].ffn.lin1.out_features == 48),
    (PruneHiddenConfig(ratio=0.25), lambda m: m.config.dim == 24 and m.distilbert.transformer.layer[0].attention.q_lin.out_features == 24),
    (DropLayersConfig(strategy="top", count=2), lambda m: m.config.n_layers == 2 and len(m.distilbert.transformer.layer) == 2),
])
def test_each_structured_pass_runs_and_round_trips(config, check, tokenizer, batch, tmp_path):
    model = apply(distilbert(tokenizer), config)
    assert check(model)
    assert_round_trip(model, tokenizer, batch, tmp_path / "model")


def test_head_pruning_zeroes_exactly_the_heads_it_reports(tokenizer, batch):
    model = apply(distilbert(tokenizer), PruneHeadsConfig(ratio=0.5, scope="global"))
    removed = model.config.alembert_compression[-1]["removed"]
    for layer, dead in zip(model.distilbert.transformer.layer, removed):
        rows = layer.attention.q_lin.weight.view(4, -1, layer.attention.q_lin.in_features)
        assert [head for head in range(4) if rows[head].abs().sum() == 0] == sorted(dead)


def test_compaction_drops_zeroed_structure_without_changing_logits(tokenizer, batch):
    model = apply(apply(distilbert(tokenizer), PruneHeadsConfig(ratio=0.5, scope="global")), PruneFfnConfig(ratio=0.5, scope="global"))
    compact = compact_for_export(copy.deepcopy(model))
    torch.testing.assert_close(logits(compact, batch), logits(model, batch), rtol=0, atol=1e-6)
    history = model.config.alembert_compression
    assert [layer.attention.n_heads for layer in compact.distilbert.transformer.layer] == history[0]["heads_per_layer"]
    assert [layer.ffn.lin1.out_features for layer in compact.distilbert.transformer.layer] == history[1]["neurons_per_layer"]


def test_a_pruned_distilbert_exports_within_tolerance(tokenizer, tmp_path):
    model = apply(apply(distilbert(tokenizer), PruneHeadsConfig(ratio=0.5, scope="global")), PruneFfnConfig(ratio=0.5))
    config = ExportConfig(variants=("optimized", "int8_dynamic"), parity=ParityConfig(batch_sizes=(1, 4), max_lengths=(16,), samples=8),
                          latency=LatencyConfig(runs=3, warmup=1))
    bundle = export_model(model, tokenizer, tmp_path / "bundle", config)
    import json

    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("fp32", "optimized", "int8_dynamic"):
        entry = manifest["variants"][name]
        assert "file" in entry, entry
        assert entry["max_abs_diff"] <= entry["tolerance"]
    assert "token_type_ids" not in manifest["inputs"]
