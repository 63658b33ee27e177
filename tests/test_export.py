"""Export to ONNX: parity with PyTorch for every family and compression shape, the variants, the bundle's atomicity."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AlbertConfig, AutoModelForSequenceClassification, AutoTokenizer

from conftest import LABELS, tiny_tokenizer
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from compress.passes.prune import PruneHeadsConfig
from compress.registry import apply
from export import variants as variant_registry
from export.bundle import build_bundle, default_out, export_model
from export.config import CalibrationConfig, ExportConfig, LatencyConfig, ParityConfig
from export.parity import Comparison
from export.runtime import Predictor

FAST = dict(parity=ParityConfig(batch_sizes=(1, 3), max_lengths=(8, 40), samples=12),
            latency=LatencyConfig(runs=2, warmup=1, seq_len=16))
TINY_DEMO = DataConfig(task="demo", max_length=40, demo=DemoConfig(train_size=64, dev_size=96, test_size=8))
TEXTS = ["the movie was wonderful", "", "the plot was not good but the music was superb " * 3, "dull"]


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def assert_predictor_matches_torch(bundle: Path, model, tokenizer, variant: str = "fp32", atol: float = 1e-4) -> None:
    """The torch-free runtime's probabilities (its own tokenizer, its own padding) equal PyTorch's."""
    encoded = tokenizer(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(model.eval()(**encoded).logits, -1).numpy()
    results = Predictor(bundle, variant).predict(TEXTS)
    got = np.array([[r["probabilities"][label] for label in LABELS] for r in results])
    np.testing.assert_allclose(got, expected, atol=atol)


def tiny_albert(directory: Path):
    tokenizer = tiny_tokenizer(directory / "tok")
    torch.manual_seed(0)
    config = AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=64, max_position_embeddings=128, num_labels=2,
                          id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}, pad_token_id=0)
    return AutoModelForSequenceClassification.from_config(config), tokenizer


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra"])
def test_family_exports_with_parity_and_dynamic_axes(family, tiny_dir, tmp_path):
    model_dir = tiny_dir(family, layers=2)
    assert len(AutoTokenizer.from_pretrained(model_dir)) > 100  # real words, so parity runs on real token ids
    bundle = build_bundle(ExportConfig(model=str(model_dir), out=str(tmp_path / "b"), variants=("optimized",), **FAST))
    manifest = manifest_of(bundle)
    for name in ("fp32", "optimized"):
        assert manifest["variants"][name]["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(bundle / "model.onnx")).graph
    assert all(dim.dim_param for i in graph.input for dim in i.type.tensor_type.shape.dim)  # batch and sequence are symbolic
    assert manifest["opset"] >= 17 and manifest["variants"]["fp32"]["opset"] >= 17
    assert len({tuple(s) for s in manifest["parity"]["batch_shapes"]}) >= 3  # several batch sizes and lengths
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert_predictor_matches_torch(bundle, model, AutoTokenizer.from_pretrained(model_dir), "optimized")


def test_albert_shared_and_factorized_embeddings_export(tmp_path):
    model, tokenizer = tiny_albert(tmp_path / "albert")
    bundle = export_model(model, tokenizer, tmp_path / "b", ExportConfig(variants=("optimized",), **FAST))
    assert manifest_of(bundle)["variants"]["optimized"]["max_abs_diff"] <= 1e-4
    assert_predictor_matches_torch(bundle, model, tokenizer, "optimized")


def prune_heads(model, layer: int, keep: int) -> None:
    """What a head-pruning pass leaves: layer `layer` holds `keep` heads, its projections sliced to match."""
    attention = model.bert.encoder.layer[layer].attention
    width = keep * attention.self.attention_head_size
    for name in ("query", "key", "value"):
        old = getattr(attention.self, name)
        new = torch.nn.Linear(old.in_features, width)
        new.weight.data, new.bias.data = old.weight.data[:width].clone(), old.bias.data[:width].clone()
        setattr(attention.self, name, new)
    dense = attention.output.dense
    sliced = torch.nn.Linear(width, dense.out_features)
    sliced.weight.data, sliced.bias.data = dense.weight.data[:, :width].clone(), dense.bias.data.clone()
    attention.output.dense = sliced
    attention.self.num_attention_heads, attention.self.all_head_size = keep, width


def test_uneven_heads_fall_back_to_unfused_attention_with_a_note(tiny_dir, tmp_path):
    model_dir = tiny_dir("bert", layers=2)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager")
    prune_heads(model, layer=1, keep=2)
    bundle = export_model(model, AutoTokenizer.from_pretrained(model_dir), tmp_path / "b", ExportConfig(variants=("optimized",), **FAST))
    entry = manifest_of(bundle)["variants"]["optimized"]
    assert entry["max_abs_diff"] <= 1e-4
    assert any("different head counts [4, 2]" in note for note in entry["notes"])
    assert_predictor_matches_torch(bundle, model, AutoTokenizer.from_pretrained(model_dir), "optimized")


def test_head_pruned_models_are_compacted_so_the_graph_is_smaller_and_fused(tiny_dir, tmp_path):
    """prune_heads keeps zeroed heads in the saved model; the export removes them (same logits)."""
    model_dir = tiny_dir("bert", layers=2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    full = export_model(AutoModelForSequenceClassification.from_pretrained(model_dir), tokenizer, tmp_path / "full",
                        ExportConfig(variants=("optimized",), **FAST))
    pruned = apply(AutoModelForSequenceClassification.from_pretrained(model_dir).eval(), PruneHeadsConfig(ratio=0.5))
    bundle = export_model(pruned, tokenizer, tmp_path / "pruned", ExportConfig(variants=("optimized",), **FAST))
    entry = manifest_of(bundle)["variants"]["optimized"]
    assert entry["max_abs_diff"] <= 1e-4 and any("Attentionx2" in note for note in entry["notes"])
    assert entry["size_mb"] < manifest_of(full)["variants"]["optimized"]["size_mb"]
    assert_predictor_matches_torch(bundle, pruned, tokenizer, "optimized")


def test_layer_dropped_and_factorized_linear_models_export(tiny_dir, tmp_path):
    """A layer-dropping pass leaves fewer layers; a factorizing pass replaces a Linear by two low-rank ones."""
    model_dir = tiny_dir("bert", layers=4)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.bert.encoder.layer = model.bert.encoder.layer[:2]
    model.config.num_hidden_layers = 2
    ffn = model.bert.encoder.layer[0].intermediate.dense
    u, s, vh = torch.linalg.svd(ffn.weight.data, full_matrices=False)
    first, second = torch.nn.Linear(ffn.in_features, 8, bias=False), torch.nn.Linear(8, ffn.out_features)
    first.weight.data, second.weight.data, second.bias.data = vh[:8].clone(), (u[:, :8] * s[:8]).clone(), ffn.bias.data.clone()
    model.bert.encoder.layer[0].intermediate.dense = torch.nn.Sequential(first, second)
    bundle = export_model(model, AutoTokenizer.from_pretrained(model_dir), tmp_path / "b", ExportConfig(variants=("optimized",), **FAST))
    assert manifest_of(bundle)["variants"]["optimized"]["max_abs_diff"] <= 1e-4
    assert_predictor_matches_torch(bundle, model, AutoTokenizer.from_pretrained(model_dir), "optimized")


@pytest.fixture(scope="module")
def full_bundle(tiny_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "bundle"
    return build_bundle(ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(out), data=TINY_DEMO, per_channel=True,
                                     calibration=CalibrationConfig(method="entropy", samples=32), **FAST))


def test_full_bundle_has_every_variant_checked_with_metric_and_latency(full_bundle, tiny_dir):
    import onnxruntime

    from export.config import Tolerances

    manifest = manifest_of(full_bundle)
    entries = manifest["variants"]
    assert set(entries) == {"fp32", "optimized", "int8_dynamic", "int8_static", "fp16"}
    # parity recomputed here, on texts the export never saw, instead of read back from the manifest it wrote
    model_dir = tiny_dir("bert", layers=2)
    encoded = AutoTokenizer.from_pretrained(model_dir)(TEXTS, padding=True, truncation=True, max_length=40, return_tensors="np")
    feed = {name: encoded[name].astype(np.int64) for name in manifest["inputs"]}
    with torch.no_grad():
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        expected = model(**{name: torch.from_numpy(array) for name, array in feed.items()}).logits.numpy()
    defaults = Tolerances()
    for name, entry in entries.items():
        assert (full_bundle / entry["file"]).is_file()
        assert entry["tolerance"] == {"fp32": defaults.fp32, "fp16": defaults.fp16, "int8": 1.0}[entry["precision"]]  # the classifier's own int8 bound
        session = onnxruntime.InferenceSession(str(full_bundle / entry["file"]), providers=["CPUExecutionProvider"])
        got = session.run(None, feed)[0].astype(np.float32)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= entry["tolerance"], name
        assert 0.0 <= entry["metric"] <= 1.0 and entry["latency_ms"] > 0 and entry["size_mb"] > 0
        assert "metric_drop" in entry or name == "fp32"
    assert entries["fp16"]["tolerance"] == 2e-2
    assert entries["int8_dynamic"]["size_mb"] < entries["fp32"]["size_mb"] / 2
    assert any("entropy calibration" in note for note in entries["int8_static"]["notes"])
    assert manifest["pytorch"]["metric"] == pytest.approx(entries["fp32"]["metric"])
    assert (full_bundle / "tokenizer.json").is_file() and (full_bundle / "label_map.json").is_file()
    assert manifest["labels"] == list(LABELS) and manifest["data"]["metric_split"] == "dev"
    # what built it: the CPU's flags, the int8 setting chosen from them, and the fastest variant measured here
    from alembert import hardware
    assert manifest["machine"] == hardware.cpu().record()
    reduce_range, why = hardware.int8_reduce_range(hardware.cpu())
    assert manifest["int8"] == {"reduce_range": reduce_range, "why": why}
    assert all(f"reduce_range={reduce_range} ({why})" in " ".join(entries[name]["notes"]) for name in ("int8_dynamic", "int8_static"))
    latencies = {name: entry["latency_ms"] for name, entry in entries.items()}
    assert manifest["fastest_variant"] == min(latencies, key=latencies.get)


def test_every_variant_runs_in_the_predictor(full_bundle):
    for variant in ("fp32", "optimized", "int8_dynamic", "int8_static", "fp16"):
        results = Predictor(full_bundle, variant).predict(["the acting was superb", "boring"])
        assert all(r["label"] in LABELS and sum(r["probabilities"].values()) == pytest.approx(1.0) for r in results)
    assert Predictor(full_bundle, "fastest").variant == manifest_of(full_bundle)["fastest_variant"]


def corrupt_graph(ctx, out):
    out.write_bytes(b"not an onnx graph")
    yield variant_registry.Candidate(out, ("broken on purpose",))


def crashing_tool(ctx, out):
    raise ValueError("Unable to find data type for weight_name=x")
    yield


@pytest.mark.parametrize("builder, message", [
    (corrupt_graph, "export variant 'fp16' failed its check: broken on purpose: onnxruntime cannot load model.fp16.onnx"),
    (crashing_tool, "building export variant 'fp16' failed: ValueError: Unable to find data type"),
])
def test_a_variant_that_fails_names_itself_and_leaves_nothing(builder, message, tiny_dir, tmp_path, monkeypatch):
    original = variant_registry.VARIANTS["fp16"]
    out = tmp_path / "out" / "bundle"
    with variant_registry.VARIANTS.replaced("fp16", variant_registry.Variant("fp16", original.filename, "fp16", builder)):
        with pytest.raises(AlembertError, match=re.escape(message)):
            build_bundle(ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(out), variants=("fp16",), **FAST))
    assert not out.exists() and list(out.parent.iterdir()) == []  # no half-written bundle, no temp directory


def test_int8_falls_back_to_per_channel_scales_when_per_tensor_fails_its_check(tiny_dir, tmp_path, monkeypatch):
    real = variant_registry.quantize_dynamic

    def per_tensor_broken(source, out, *, per_channel, **kwargs):
        real(source, out, per_channel=per_channel, **kwargs)
        if not per_channel:
            Path(out).write_bytes(b"a per-tensor graph that fails")

    monkeypatch.setattr(variant_registry, "quantize_dynamic", per_tensor_broken)
    bundle = build_bundle(ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(tmp_path / "b"),
                                       variants=("int8_dynamic",), **FAST))
    notes = manifest_of(bundle)["variants"]["int8_dynamic"]["notes"]
    assert "per_channel=True" in notes[0] and notes[1].startswith("rejected first: ") and "cannot load" in notes[1]


def test_fp32_parity_beyond_tolerance_fails_with_the_difference(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("export.parity.compare", lambda path, parity: Comparison(3e-3, 1.0))
    with pytest.raises(AlembertError, match=r"export variant 'fp32' failed its check: max abs difference from PyTorch 0\.003"):
        build_bundle(ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(tmp_path / "b"), variants=(), **FAST))
    assert not (tmp_path / "b").exists()


def test_an_exporter_failure_names_the_family(tiny_dir, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported: aten::weird_op")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(AlembertError, match=r"ONNX export of the bert model \(BertForSequenceClassification\) failed: "
                                            r"Unsupported: aten::weird_op"):
        build_bundle(ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(tmp_path / "b"), variants=(), **FAST))


@pytest.mark.parametrize("overrides, message", [
    ({"variants": ("optimized", "int4")}, "unknown export variant"),
    ({"model": "/no/such/model"}, "does not exist"),
    ({"opset": 13}, "opset=13 is too old"),
    ({"variants": ("int8_static",), "data": TINY_DEMO, "calibration": CalibrationConfig(method="kl")},
     "calibration.method=kl is unknown"),
])
def test_bad_settings_fail_with_one_clear_line(overrides, message, tiny_dir, tmp_path):
    config = {"model": str(tiny_dir("bert", layers=2)), "out": str(tmp_path / "b"), "variants": (), **FAST, **overrides}
    with pytest.raises(AlembertError, match=message) as error:
        build_bundle(ExportConfig(**config))
    assert "\n" not in str(error.value) and "; " in str(error.value)


def test_a_torch_int8_compress_result_is_refused_with_the_way_out(tmp_path):
    model_dir = tmp_path / "int8"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model_int8.safetensors").write_bytes(b"")
    with pytest.raises(AlembertError, match="PyTorch dynamic-int8 model .* export the float model saved before the quantize_dynamic pass"):
        build_bundle(ExportConfig(model=str(model_dir), out=str(tmp_path / "b"), variants=()))


def test_data_with_foreign_labels_is_refused(tiny_dir, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\ngood film\tyes\nbad film\tno\n")
    config = ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(tmp_path / "b"), variants=(), **FAST,
                          data=DataConfig(task="files", train=str(data), dev=str(data)))
    with pytest.raises(AlembertError, match=r"labels \['no', 'yes'\] match neither"):
        build_bundle(config)


def test_registering_a_variant_name_twice_is_refused():
    with pytest.raises(AlembertError, match="export variant 'fp16' is registered twice"):
        variant_registry.register("fp16", precision="fp16")(corrupt_graph)


def test_default_output_sits_beside_the_model(tmp_path):
    assert default_out(tmp_path / "student") == tmp_path.resolve() / "student-onnx"


def test_hydra_cli_writes_a_bundle_and_reports_bad_input_in_one_line(tiny_dir, tmp_path):
    model_dir = tiny_dir("distilbert", layers=2)
    out = tmp_path / "cli-bundle"
    ok = subprocess.run([sys.executable, "-m", "export", f"model={model_dir}", f"out={out}", "variants=[int8_dynamic]",
                         "parity.batch_sizes=[2]", "parity.max_lengths=[16]", "latency.runs=2"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert set(manifest_of(out)["variants"]) == {"fp32", "int8_dynamic"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli-bundle"]  # no Hydra outputs/ or stray temp files
    bad = subprocess.run([sys.executable, "-m", "export", f"model={tmp_path / 'missing'}"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"alembert: error: model directory {tmp_path / 'missing'} does not exist; "
                                               "pass a directory saved by python -m distill, python -m compress or save_pretrained"]


def test_openvino_runs_the_plain_graphs_with_parity_and_the_predictor_agrees_with_onnxruntime(full_bundle):
    pytest.importorskip("openvino")
    from alembert import hardware

    manifest = manifest_of(full_bundle)
    table = manifest["runtimes"]["openvino"]["variants"]
    assert "fused operators" in table["optimized"]["skipped"]  # onnxruntime's own fused ops: not for OpenVINO
    assert table["fp32"]["precision"] == "fp32" and table["fp32"]["max_abs_diff"] <= 1e-4 and table["fp32"]["latency_ms"] > 0
    assert ("fp32@bf16" in table) == hardware.cpu().has_bf16  # bf16 is tried only where the CPU has it
    if "fp32@bf16" in table:
        assert table["fp32@bf16"]["precision"] == "bf16" and "metric_drop" in table["fp32@bf16"]
    texts = ["the acting was superb", "boring", "a fine film with a dull ending"]
    ours, theirs = Predictor(full_bundle, "fp32", runtime="openvino"), Predictor(full_bundle, "fp32")
    assert ours.runtime == "openvino" and theirs.runtime == "onnxruntime"
    for a, b in zip(ours.predict(texts), theirs.predict(texts)):
        assert a["label"] == b["label"]
        assert a["probabilities"]["positive"] == pytest.approx(b["probabilities"]["positive"], abs=1e-5)
    timed = [e["latency_ms"] for e in manifest["variants"].values()]
    timed += [e["latency_ms"] for e in table.values() if "latency_ms" in e]
    assert manifest["fastest"]["latency_ms"] == min(timed)


def test_a_runtime_that_is_not_installed_falls_back_to_onnxruntime_in_one_line(full_bundle, capsys):
    from dataclasses import replace

    from export.backends import BACKENDS

    with BACKENDS.replaced("openvino", replace(BACKENDS["openvino"], available=lambda: False)):
        predictor = Predictor(full_bundle, "fp32", runtime="openvino")
    assert predictor.runtime == "onnxruntime" and predictor.predict("boring")[0]["label"] in LABELS
    assert capsys.readouterr().err.strip() == ("alembert: runtime 'openvino' is not installed "
                                               "(pip install 'alembert[openvino]'); using onnxruntime")
    with pytest.raises(AlembertError, match="unknown runtime 'tensorrt'"):
        Predictor(full_bundle, runtime="tensorrt")


def test_the_execution_provider_is_chosen_by_name_with_the_cpu_behind_it(full_bundle, monkeypatch, capsys):
    from export import providers

    assert all(entry["providers"] == [providers.CPU] for name, entry in manifest_of(full_bundle)["variants"].items()
               if "providers" in entry) and manifest_of(full_bundle)["parity"]["provider"] == "cpu"
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", providers.CPU])
    assert providers.session_providers("cuda") == ["CUDAExecutionProvider", providers.CPU]  # CPU runs what CUDA lacks
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [providers.CPU])
    predictor = Predictor(full_bundle, "fp32", provider="tensorrt")  # not in this onnxruntime: the CPU, said once
    assert predictor.session.providers == [providers.CPU] and predictor.predict(["superb"])[0]["label"] in LABELS
    assert "no TensorrtExecutionProvider" in capsys.readouterr().err
    with pytest.raises(AlembertError, match=r"execution provider 'npu' is unknown; use one of cpu, cuda, tensorrt"):
        providers.session_providers("npu")
