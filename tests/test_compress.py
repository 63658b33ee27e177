"""Compression passes on tiny BERT/RoBERTa models: exactness where promised, round trips, shapes and errors."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_tokenizer
from transformers import AutoModelForSequenceClassification

from compress.cli import CompressConfig, build_steps, run, task_loaders
from compress.passes.factorize import FactorizeEmbeddingsConfig
from compress.saving import INT8_WEIGHTS, load_compressed, save_compressed
from compress.passes.hidden import PruneHiddenConfig
from compress.passes.layers import DropLayersConfig
from compress.pipeline import RecoveryConfig, Step, run_pipeline
from distill.recovery import kd_recovery
from compress.passes.prune import PruneFfnConfig, PruneHeadsConfig
from alembert.compact import compact_for_export
from compress.passes.quantize import CastConfig, QuantizeDynamicConfig
from compress.registry import apply, config_from_name, is_precision_pass, register_pass
from compress.report import parameter_counts, serialized_mb
from compress.passes.share import ShareLayersConfig
from compress.passes.sparsity import SparsityConfig, linear_sparsity
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.training import TrainConfig
from alembert.errors import AlembertError

torch.set_num_threads(2)
TINY_DATA = DataConfig(task="demo", max_length=24, demo=DemoConfig(train_size=96, dev_size=48, test_size=16))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("compress-tok"))


@pytest.fixture
def make_model(tokenizer):
    def make(family: str = "bert", layers: int = 4):
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_config(tiny_config(family, len(tokenizer), layers)).eval()

    return make


@pytest.fixture(scope="module")
def batch(tokenizer):
    """Two right-padded sentences: padding must not change the exactness of any conversion."""
    return dict(tokenizer(["the movie was brilliant but the ending was dull", "not bad"], padding=True, return_tensors="pt"))


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits.float()


def assert_round_trip(model, tokenizer, batch, directory: Path) -> torch.nn.Module:
    """Forward runs, save/load gives identical logits, and the config alone rebuilds the same parameter count."""
    before = logits(model, batch)
    assert torch.isfinite(before).all()
    save_compressed(model, tokenizer, directory)
    reloaded = load_compressed(directory)
    torch.testing.assert_close(logits(reloaded, batch), before, rtol=0, atol=1e-6)
    if not (directory / INT8_WEIGHTS).exists():
        stock = AutoModelForSequenceClassification.from_pretrained(directory).eval()
        torch.testing.assert_close(logits(stock, batch), before, rtol=0, atol=1e-6)
        from_config = AutoModelForSequenceClassification.from_config(model.config)
        assert parameter_counts(from_config)["params"] == parameter_counts(model)["params"]
    return reloaded


# --- ALBERT conversion, sharing and factorization -------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_albert_conversion_with_one_group_per_layer_is_exact(family, make_model, tokenizer, batch, tmp_path):
    model = make_model(family)
    converted = apply(copy.deepcopy(model), ShareLayersConfig(groups=4))
    assert converted.config.model_type == "albert" and converted.config.num_hidden_groups == 4
    torch.testing.assert_close(logits(converted, batch), logits(model, batch), rtol=0, atol=1e-6)
    assert_round_trip(converted, tokenizer, batch, tmp_path / "albert")


@pytest.mark.parametrize("init", ["mean", "first"])
def test_sharing_into_two_groups_halves_the_layer_weights(init, make_model, tokenizer, batch, tmp_path):
    model = make_model("bert")
    shared = apply(copy.deepcopy(model), ShareLayersConfig(groups=2, init=init))
    groups = shared.albert.encoder.albert_layer_groups
    assert len(groups) == 2
    layer_params = sum(p.numel() for p in groups.parameters())
    bert_layer_params = sum(p.numel() for p in model.bert.encoder.layer.parameters())
    assert layer_params * 2 == bert_layer_params
    first = model.bert.encoder.layer[0].intermediate.dense.weight
    second = model.bert.encoder.layer[1].intermediate.dense.weight
    expected = first if init == "first" else (first + second) / 2
    torch.testing.assert_close(groups[0].albert_layers[0].ffn.weight, expected)
    assert_round_trip(shared, tokenizer, batch, tmp_path / "shared")


def test_factorization_at_full_width_is_exact_and_smaller_width_reports_its_error(make_model, tokenizer, batch, tmp_path):
    model = make_model("roberta")
    full = apply(copy.deepcopy(model), FactorizeEmbeddingsConfig(embedding_size=32))
    torch.testing.assert_close(logits(full, batch), logits(model, batch), rtol=0, atol=1e-5)
    small = apply(copy.deepcopy(model), FactorizeEmbeddingsConfig(embedding_size=8))
    config = small.config
    assert small.albert.embeddings.word_embeddings.weight.shape == (config.vocab_size, 8)
    assert small.albert.encoder.embedding_hidden_mapping_in.weight.shape == (32, 8)
    record = config.alembert_compression[-1]
    assert record["pass"] == "factorize_embeddings" and 0 < record["word_reconstruction_error"] < 1
    assert not torch.equal(logits(small, batch), logits(model, batch))
    assert_round_trip(small, tokenizer, batch, tmp_path / "factorized")


def test_factorization_can_shrink_an_already_factorized_model(make_model, tokenizer, batch, tmp_path):
    once = apply(make_model("bert"), FactorizeEmbeddingsConfig(embedding_size=16))
    before = logits(once, batch)
    again = apply(copy.deepcopy(once), FactorizeEmbeddingsConfig(embedding_size=16))  # same width: exact
    torch.testing.assert_close(logits(again, batch), before, rtol=0, atol=1e-5)
    assert_round_trip(apply(again, FactorizeEmbeddingsConfig(embedding_size=4)), tokenizer, batch, tmp_path / "f4")


# --- structured pruning ------------------------------------------------------------------------------

def test_per_layer_head_pruning_zeroes_the_same_number_of_heads_in_every_layer(make_model, tokenizer, batch, tmp_path):
    model = apply(make_model("bert"), PruneHeadsConfig(ratio=0.5))
    record = model.config.alembert_compression[-1]
    assert record["heads_per_layer"] == [2, 2, 2, 2]
    for layer, dead in zip(model.bert.encoder.layer, record["removed"]):
        heads = layer.attention.self.query.weight.view(4, 8, 32)
        assert [h for h in range(4) if heads[h].abs().sum() == 0] == sorted(dead)
    assert_round_trip(model, tokenizer, batch, tmp_path / "heads")


def test_global_ffn_pruning_pads_uneven_layers_and_reloads_exactly(make_model, tokenizer, batch, tmp_path):
    model = apply(make_model("roberta"), PruneFfnConfig(ratio=0.5, scope="global"))
    kept = model.config.alembert_compression[-1]["neurons_per_layer"]
    assert sum(kept) == 4 * 64 - int(0.5 * 4 * 64) and len(set(kept)) > 1
    assert model.config.intermediate_size == max(kept)
    for layer, count in zip(model.roberta.encoder.layer, kept):
        live_rows = int((layer.intermediate.dense.weight.abs().sum(dim=1) != 0).sum())
        assert live_rows == count and layer.output.dense.in_features == max(kept)
    assert_round_trip(model, tokenizer, batch, tmp_path / "ffn")


def test_per_layer_ffn_pruning_really_removes_neurons(make_model, tokenizer, batch, tmp_path):
    model = make_model("bert")
    before = parameter_counts(model)["params"]
    model = apply(model, PruneFfnConfig(ratio=0.25))
    assert model.config.intermediate_size == 48
    assert before - parameter_counts(model)["params"] == 4 * 16 * (32 + 1 + 32)
    assert_round_trip(model, tokenizer, batch, tmp_path / "ffn")


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_hidden_pruning_narrows_residual_and_heads_together(family, make_model, tokenizer, batch, tmp_path):
    model = make_model(family)
    before = logits(model, batch)
    model = apply(model, PruneHiddenConfig(ratio=0.25))
    assert model.config.hidden_size == 24 and model.config.num_attention_heads == 4
    attention = model.base_model.encoder.layer[0].attention.self
    assert (attention.attention_head_size, attention.query.out_features, attention.query.in_features) == (6, 24, 24)
    assert (logits(model, batch) - before).abs().max() < 0.1  # a small random model barely uses a quarter of its width
    assert_round_trip(model, tokenizer, batch, tmp_path / "narrow")


def test_hidden_pruning_works_on_shared_albert_layers(make_model, tokenizer, batch, tmp_path):
    model = apply(apply(make_model("bert"), ShareLayersConfig(groups=2)), PruneHiddenConfig(ratio=0.5))
    assert model.config.hidden_size == 16 and model.config.embedding_size == 32
    assert_round_trip(model, tokenizer, batch, tmp_path / "narrow-albert")


def test_compacting_for_export_drops_zero_heads_and_padding_without_changing_logits(make_model, batch, tmp_path):
    model = apply(make_model("roberta"), PruneHeadsConfig(ratio=0.5, scope="global"))
    model = apply(model, PruneFfnConfig(ratio=0.5, scope="global"))
    history = model.config.alembert_compression
    compact = compact_for_export(copy.deepcopy(model))
    torch.testing.assert_close(logits(compact, batch), logits(model, batch), rtol=0, atol=1e-6)
    layers = compact.roberta.encoder.layer
    assert [layer.attention.self.num_attention_heads for layer in layers] == history[0]["heads_per_layer"]
    assert [layer.intermediate.dense.out_features for layer in layers] == history[1]["neurons_per_layer"]
    assert parameter_counts(compact)["params"] < parameter_counts(model)["params"]
    with pytest.raises(AlembertError, match="compacted for export"):
        save_compressed(compact, None, tmp_path / "compact")


def test_global_selection_keeps_at_least_one_head_in_every_layer(make_model):
    model = apply(make_model("bert"), PruneHeadsConfig(ratio=0.9, scope="global"))
    assert min(model.config.alembert_compression[-1]["heads_per_layer"]) >= 1


def test_taylor_importance_uses_task_batches(make_model, tokenizer):
    model = make_model("bert")
    data = task_loaders(TINY_DATA, tokenizer, model, batch_size=16)
    taylor = apply(copy.deepcopy(model), PruneFfnConfig(ratio=0.5, importance="taylor", taylor_batches=2), batches=data.train)
    magnitude = apply(copy.deepcopy(model), PruneFfnConfig(ratio=0.5))
    assert taylor.config.intermediate_size == 32
    assert not torch.equal(taylor.bert.encoder.layer[0].intermediate.dense.weight, magnitude.bert.encoder.layer[0].intermediate.dense.weight)
    assert all(p.grad is None for p in taylor.parameters())


# --- layers, sparsity, quantization ------------------------------------------------------------------

@pytest.mark.parametrize(("config", "kept"), [
    (DropLayersConfig(strategy="top", count=2), [0, 1]),
    (DropLayersConfig(strategy="alternate"), [0, 2]),
    (DropLayersConfig(strategy="explicit", layers=(0, 3)), [1, 2]),
])
def test_drop_layers_keeps_the_chosen_layers(config, kept, make_model, tokenizer, batch, tmp_path):
    model = make_model("bert")
    originals = [model.bert.encoder.layer[i] for i in kept]
    model = apply(model, config)
    assert model.config.num_hidden_layers == len(kept)
    assert all(a is b for a, b in zip(model.bert.encoder.layer, originals))
    assert_round_trip(model, tokenizer, batch, tmp_path / "dropped")


@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_magnitude_sparsity_is_permanent_and_reaches_its_target(scope, make_model, tokenizer, batch, tmp_path):
    model = make_model("bert")
    keys = set(model.state_dict())
    model = apply(model, SparsityConfig(sparsity=0.6, scope=scope))
    assert set(model.state_dict()) == keys  # masks folded in: no weight_orig / weight_mask left
    assert linear_sparsity(model) == pytest.approx(0.6, abs=0.01)
    assert model.config.alembert_compression[-1]["achieved"] == pytest.approx(0.6, abs=0.01)
    reloaded = assert_round_trip(model, tokenizer, batch, tmp_path / "sparse")
    assert linear_sparsity(reloaded) == pytest.approx(linear_sparsity(model))


def test_dynamic_int8_round_trips_through_its_own_format(make_model, tokenizer, batch, tmp_path):
    model = make_model("bert")
    quantized = apply(copy.deepcopy(model), QuantizeDynamicConfig())
    assert (logits(quantized, batch) - logits(model, batch)).abs().max() < 0.05
    assert_round_trip(quantized, tokenizer, batch, tmp_path / "int8")
    assert (tmp_path / "int8" / INT8_WEIGHTS).stat().st_size < 0.8 * serialized_mb(model) * 1e6


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_cast_saves_with_stock_classes(dtype, make_model, tokenizer, batch, tmp_path):
    model = apply(make_model("roberta"), CastConfig(dtype=dtype))
    assert next(model.parameters()).dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    assert_round_trip(model, tokenizer, batch, tmp_path / dtype)


# --- composition ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_prune_share_factorize_quantize(family, make_model, tokenizer, batch, tmp_path):
    model = make_model(family)
    steps = [PruneHeadsConfig(ratio=0.25), PruneFfnConfig(ratio=0.5, scope="global"), ShareLayersConfig(groups=2),
             FactorizeEmbeddingsConfig(embedding_size=16), QuantizeDynamicConfig()]
    for index, config in enumerate(steps):
        model = apply(model, config)
        assert_round_trip(model, tokenizer, batch, tmp_path / f"step{index}")
    assert model.config.num_hidden_groups == 2 and model.config.embedding_size == 16
    assert [r["pass"] for r in model.config.alembert_compression] == [
        "prune_heads", "prune_ffn", "share_layers", "factorize_embeddings", "quantize_dynamic"]


def test_factorize_then_prune(make_model, tokenizer, batch, tmp_path):
    model = apply(make_model("bert"), FactorizeEmbeddingsConfig(embedding_size=16))
    assert_round_trip(model, tokenizer, batch, tmp_path / "factorized")
    model = apply(model, PruneHeadsConfig(ratio=0.5, scope="global"))
    model = apply(model, PruneFfnConfig(ratio=0.5, scope="global"))
    assert model.config.intermediate_size < 64
    assert_round_trip(model, tokenizer, batch, tmp_path / "pruned")


def test_drop_prune_recover_pipeline_writes_model_and_table(make_model, tokenizer, tmp_path):
    model = make_model("roberta")
    data = task_loaders(TINY_DATA, tokenizer, model, batch_size=16)
    steps = [DropLayersConfig(strategy="alternate"), Step(PruneFfnConfig(ratio=0.5), recover=True), QuantizeDynamicConfig()]
    recovery = RecoveryConfig(at_end=False, train=TrainConfig(epochs=1, batch_size=16, lr=1e-3))
    final, rows = run_pipeline(model, tokenizer, steps, data=data, recovery=recovery, out_dir=tmp_path, seq_len=16,
                               distiller=kd_recovery)
    assert [r["step"] for r in rows] == ["input", "drop_layers", "prune_ffn", "prune_ffn + recovery", "quantize_dynamic"]
    assert all("metric" in r and r["params"] > 0 for r in rows)
    assert rows[1]["non_embedding_params"] < rows[0]["non_embedding_params"]
    assert rows[3]["logit_drift"] > 0  # recovery trained the model
    assert (tmp_path / "compress_report.md").is_file() and (tmp_path / "compress_report.json").is_file()
    dev_batch = {k: v for k, v in next(iter(data.dev)).items() if k not in ("labels", "index")}
    torch.testing.assert_close(logits(load_compressed(tmp_path / "model"), dev_batch), logits(final, dev_batch), rtol=0, atol=1e-6)


def test_cli_job_runs_from_plain_settings(tiny_model_dir, tmp_path):
    config = CompressConfig(model=str(tiny_model_dir), passes=("drop_layers", {"name": "prune_ffn", "ratio": 0.5}),
                            settings={"drop_layers": {"count": 1}}, seq_len=16)
    rows = run(config, tmp_path)
    assert [r["step"] for r in rows] == ["input", "drop_layers", "prune_ffn"]
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").config.num_hidden_layers == 3


@pytest.fixture
def tiny_model_dir(make_model, tokenizer, tmp_path):
    directory = tmp_path / "tiny"
    make_model("bert").save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# --- bad input: one clear AlembertError each --------------------------------------------------------

def test_unknown_pass_name_lists_the_valid_ones():
    with pytest.raises(AlembertError, match=r"unknown compression pass 'prune_everything'.*prune_ffn.*share_layers"):
        config_from_name("prune_everything")
    with pytest.raises(AlembertError, match="unknown config key"):
        build_steps(("prune_ffn",), {"prune_ffn": {"ratioo": 0.5}})


def test_a_second_handler_for_the_same_config_or_name_is_refused():
    with pytest.raises(AlembertError, match="PruneFfnConfig is registered twice"):
        register_pass("prune_ffn_again", PruneFfnConfig)(lambda model, config, *, batches=None: model)
    with pytest.raises(AlembertError, match="the compression pass 'prune_ffn' is registered twice"):
        register_pass("prune_ffn", ThrowAwayConfig)(lambda model, config, *, batches=None: model)


@dataclasses.dataclass(frozen=True)
class ThrowAwayConfig:
    pass


def test_pass_flags_travel_as_versioned_metadata(make_model):
    """Export learns which passes left zeroed structure from config.json, not from a list kept in compress."""
    model = apply(apply(make_model("bert"), PruneHeadsConfig(ratio=0.25)), SparsityConfig(sparsity=0.5))
    entries = model.config.alembert_compression
    assert [(e["pass"], e.get("leaves_zeroed", False)) for e in entries] == [("prune_heads", True), ("sparsity", False)]
    assert model.config.alembert_compression_version == 1
    assert is_precision_pass(QuantizeDynamicConfig()) and is_precision_pass(CastConfig())
    assert not is_precision_pass(PruneFfnConfig())


@pytest.mark.parametrize(("config_type", "settings"), [(PruneHeadsConfig, {"ratio": 1.0}), (PruneFfnConfig, {"ratio": -0.1}),
                                                     (PruneHiddenConfig, {"ratio": 1.5}), (SparsityConfig, {"sparsity": 1.0})])
def test_ratios_outside_zero_one_are_refused(config_type, settings):
    with pytest.raises(AlembertError, match=r"outside \[0, 1\)"):
        config_type(**settings)


@pytest.mark.parametrize(("make_config", "message"), [
    (lambda: PruneFfnConfig(scope="everywhere"), "prune_ffn.scope=everywhere is unknown; use one of per_layer, global"),
    (lambda: PruneHeadsConfig(importance="random"), "prune_heads.importance=random is unknown; use one of magnitude, taylor"),
    (lambda: DropLayersConfig(strategy="middle"), "drop_layers.strategy=middle is unknown"),
    (lambda: CastConfig(dtype="int4"), "cast.dtype=int4 is unknown; use one of fp16, bf16"),
    (lambda: ShareLayersConfig(groups=5), "groups=5 must be between 1 and the model's 4 layers"),
    (lambda: FactorizeEmbeddingsConfig(embedding_size=64), "must be between 2 and the current width 32"),
])
def test_bad_settings_name_the_setting_and_the_fix(make_config, message, make_model):
    with pytest.raises(AlembertError, match=message):
        apply(make_model("bert"), make_config())


def test_bad_settings_fail_when_the_config_is_built_before_any_model_loads():
    with pytest.raises(AlembertError, match=r"prune_ffn.ratio=1.0 is outside \[0, 1\)"):
        build_steps(("prune_ffn",), {"prune_ffn": {"ratio": 1.0}})


@pytest.mark.parametrize("settings", [{"strategy": "top", "count": 4}, {"strategy": "explicit", "layers": (0, 1, 2, 3)}])
def test_dropping_every_layer_is_refused(settings, make_model):
    with pytest.raises(AlembertError, match="keep at least one layer"):
        apply(make_model("bert"), DropLayersConfig(**settings))


@pytest.mark.parametrize(("family", "config"), [("mpnet", ShareLayersConfig()), ("deberta-v2", FactorizeEmbeddingsConfig(embedding_size=8))])
def test_sharing_and_factorizing_unsupported_families_name_the_supported_ones(family, config, make_model):
    with pytest.raises(AlembertError, match=f"'{family}' model family.*it supports: .*distilbert.*roberta"):
        apply(make_model(family), config)


@pytest.mark.parametrize("config", [PruneFfnConfig(), ShareLayersConfig(), FactorizeEmbeddingsConfig(), QuantizeDynamicConfig(), CastConfig()])
def test_passes_after_int8_quantization_are_refused(config, make_model):
    quantized = apply(make_model("bert"), QuantizeDynamicConfig())
    with pytest.raises(AlembertError, match="already int8-quantized; put quantize_dynamic last"):
        apply(quantized, config)


def test_taylor_without_data_and_recovery_after_quantization_are_refused(make_model, tokenizer):
    with pytest.raises(AlembertError, match="taylor needs task data"):
        apply(make_model("bert"), PruneHeadsConfig(importance="taylor"))
    data = task_loaders(TINY_DATA, tokenizer, make_model("bert"), batch_size=16)
    with pytest.raises(AlembertError, match="put quantize_dynamic / cast after"):
        run_pipeline(make_model("bert"), tokenizer, [QuantizeDynamicConfig(), Step(CastConfig(), recover=True)],
                     data=data, recovery=RecoveryConfig())


def test_the_registry_refuses_a_config_that_is_not_a_frozen_dataclass():
    @dataclasses.dataclass
    class MutableConfig:
        ratio: float = 0.5

    class PlainConfig:
        ratio = 0.5

    for config_type in (MutableConfig, PlainConfig):
        with pytest.raises(TypeError, match=f"{config_type.__name__} must be a frozen dataclass"):
            register_pass("not_frozen", config_type)
    with pytest.raises(AlembertError, match="unknown compression pass 'not_frozen'"):
        config_from_name("not_frozen")  # nothing was registered on the way
