"""Head and FFN pruning, layer dropping and compaction on every family whose registry entry names the parts they
edit: each result round-trips through save/load with identical logits, and compaction keeps the logits."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert import fused_units
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
    rows = 2 * 48 if entry(model).gated_ffn else 48  # a gated FFN's input projection holds input and gate halves
    assert {part(model, layer, "ffn_in").out_features for layer in prunable_layers(model, "t")} == {rows}
    assert_round_trip(model, tokenizer, batch_for(model, tokenizer), tmp_path / "model")


def pruned_and_compacted(model_type, tokenizer, tmp_path, config, kept_key: str):
    """The pruned model (checked to round-trip), its compaction (checked to keep the logits), and the kept counts."""
    model = apply(make(model_type, tokenizer), config)
    batch = batch_for(model, tokenizer)
    assert_round_trip(model, tokenizer, batch, tmp_path / "model")
    compact = compact_for_export(copy.deepcopy(model))
    torch.testing.assert_close(logits(compact, batch), logits(model, batch), rtol=0, atol=1e-5)
    return model, compact, model.config.alembert_compression[-1][kept_key]


@pytest.mark.parametrize("model_type", prunable_families())
def test_head_pruning_then_compaction_keeps_the_logits(model_type, tokenizer, tmp_path):
    model, compact, kept = pruned_and_compacted(model_type, tokenizer, tmp_path, PruneHeadsConfig(ratio=0.5, scope="global"),
                                                "heads_per_layer")
    fused = entry(model).fused_qkv  # one Wqkv of 3 x 32 rows instead of a 32-row query projection
    widths = [part(compact, layer, "qkv" if fused else "query").out_features for layer in prunable_layers(compact, "t")]
    assert widths == ([heads * 8 for heads in kept] if entry(model).compact_heads else [96 if fused else 32] * 4)


def test_a_fused_head_and_a_gated_neuron_are_the_rows_and_columns_they_are_said_to_be(tokenizer):
    """Zeroing ModernBERT's head 0 through Wqkv equals cutting only its output-projection columns (its value rows are
    the ones zeroed); removing gated neuron 5 equals cutting only its FFN output column (both its Wi rows go)."""
    model = make("modernbert", tokenizer)
    batch = batch_for(model, tokenizer)
    heads_zeroed, columns_cut = copy.deepcopy(model), copy.deepcopy(model)
    fused_units.zero_heads(heads_zeroed, prunable_layers(heads_zeroed, "t")[1], [0])
    with torch.no_grad():
        part(columns_cut, prunable_layers(columns_cut, "t")[1], "attention_out").weight[:, :8] = 0
    torch.testing.assert_close(logits(heads_zeroed, batch), logits(columns_cut, batch), rtol=0, atol=1e-6)
    assert not torch.allclose(logits(heads_zeroed, batch), logits(model, batch))
    neuron_cut, column_cut = copy.deepcopy(model), copy.deepcopy(model)
    fused_units.keep_neurons(neuron_cut, prunable_layers(neuron_cut, "t")[1], [j for j in range(64) if j != 5])
    with torch.no_grad():
        part(column_cut, prunable_layers(column_cut, "t")[1], "ffn_out").weight[:, 5] = 0
    assert part(neuron_cut, prunable_layers(neuron_cut, "t")[1], "ffn_in").out_features == 2 * 63
    torch.testing.assert_close(logits(neuron_cut, batch), logits(column_cut, batch), rtol=0, atol=1e-6)


def test_prune_hidden_refuses_a_fused_qkv_family_in_one_line(tokenizer):
    from alembert.errors import AlembertError
    from compress.passes.hidden import PruneHiddenConfig

    with pytest.raises(AlembertError, match=r"prune_hidden .*modernbert"):
        apply(make("modernbert", tokenizer), PruneHiddenConfig(ratio=0.5))


@pytest.mark.parametrize("model_type", with_layer_list())
def test_dropping_layers_keeps_the_named_ones(model_type, tokenizer, tmp_path):
    model = make(model_type, tokenizer)
    kept_weights = [layer.state_dict() for layer in (model.base_model.get_submodule(entry(model).layers)[i] for i in (0, 3))]
    dropped = apply(model, DropLayersConfig(strategy="explicit", layers=(1, 2)))
    assert getattr(dropped.config, entry(dropped).layer_count_key) == 2
    for layer, weights in zip(dropped.base_model.get_submodule(entry(dropped).layers), kept_weights):
        assert all(torch.equal(layer.state_dict()[key], value) for key, value in weights.items())
    assert_round_trip(dropped, tokenizer, batch_for(dropped, tokenizer), tmp_path / "model")


@pytest.mark.parametrize("model_type", prunable_families())
def test_global_ffn_pruning_pads_uneven_layers_and_compaction_cuts_the_padding(model_type, tokenizer, tmp_path):
    model, compact, kept = pruned_and_compacted(model_type, tokenizer, tmp_path, PruneFfnConfig(ratio=0.5, scope="global"),
                                                "neurons_per_layer")
    halves = 2 if entry(model).gated_ffn else 1
    assert [part(compact, layer, "ffn_in").out_features for layer in prunable_layers(compact, "t")] == [halves * k for k in kept]


def test_a_pruned_modernbert_exports_within_tolerance(tokenizer, tmp_path):
    import json

    from export.bundle import export_model
    from export.config import ExportConfig, LatencyConfig, ParityConfig

    model = apply(apply(make("modernbert", tokenizer), PruneHeadsConfig(ratio=0.5)), PruneFfnConfig(ratio=0.5, scope="global"))
    config = ExportConfig(variants=("optimized",), parity=ParityConfig(batch_sizes=(1, 2), max_lengths=(16,), samples=4),
                          latency=LatencyConfig(runs=2, warmup=1))
    manifest = json.loads((export_model(model, tokenizer, tmp_path / "bundle", config) / "manifest.json").read_text())
    assert all(manifest["variants"][name]["max_abs_diff"] <= manifest["variants"][name]["tolerance"] for name in ("fp32", "optimized"))
