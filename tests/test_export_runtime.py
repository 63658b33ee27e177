"""The torch-free runtime: bad items never crash it, a broken bundle gives one line, and it runs without torch."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alembert.errors import AlembertError
from export.bench import main as bench_main
from export.bundle import build_bundle
from export.config import ExportConfig, LatencyConfig, ParityConfig
from export.predict import predict_lines, read_jsonl
from export.runtime import Predictor
from test_export import LABELS

REPO = Path(__file__).resolve().parents[1]
FAST = dict(parity=ParityConfig(batch_sizes=(1, 3), max_lengths=(8, 40), samples=12),
            latency=LatencyConfig(runs=2, warmup=1, seq_len=16))
# Importing any of these fails in the child, as on a device that has only onnxruntime, tokenizers and numpy.
BLOCK_HEAVY = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "transformers", "onnx", "hydra", "omegaconf", "datasets", "sklearn"}:
                raise ImportError(f"{name} is not installed on this device")
    sys.meta_path.insert(0, Block())
""")


@pytest.fixture(scope="module")
def bundle(tiny_dir, tmp_path_factory) -> Path:
    model_dir = tiny_dir("bert", layers=2)
    out = tmp_path_factory.mktemp("runtime") / "bundle"
    return build_bundle(ExportConfig(model=str(model_dir), out=str(out), variants=("optimized", "int8_dynamic"), max_length=32, **FAST))


def test_awkward_text_gets_a_result_and_bad_items_a_per_item_error(bundle):
    items = ["", "   \n\t", "wonderful " * 200, "great film 😀🎬", "film 電影 фильм فيلم good", None, 42, b"bytes", "\ud800 lone", "fine"]
    results = Predictor(bundle).predict(items)
    assert len(results) == len(items)
    for result in results[:5] + results[-1:]:
        assert result["label"] in LABELS and sum(result["probabilities"].values()) == pytest.approx(1.0)
    assert results[2]["truncated"] is True and results[0]["truncated"] is False  # longer than max_length=32: cut, and said so
    assert results[5] == {"error": "expected a string, got NoneType"}
    assert results[6] == {"error": "expected a string, got int"} and "bytes" in results[7]["error"]
    assert "lone surrogate" in results[8]["error"]
    assert Predictor(bundle).predict([]) == []


def test_max_length_is_capped_by_the_position_table(tiny_dir, tmp_path):
    """RoBERTa's 130 positions start after the padding index: at most 129 tokens, whatever was asked for."""
    bundle = build_bundle(ExportConfig(model=str(tiny_dir("roberta", layers=2)), out=str(tmp_path / "b"), variants=(),
                                       max_length=512, **FAST))
    assert json.loads((bundle / "manifest.json").read_text())["max_length"] == 129
    result = Predictor(bundle).predict(["wonderful " * 300])[0]
    assert result["truncated"] is True and result["label"] in LABELS


def test_results_do_not_depend_on_batching_or_padding(bundle):
    texts = ["good", "the plot was dull but the music was superb and the cast was charming", "bad"]
    together = Predictor(bundle, batch_size=8).predict(texts)
    alone = [Predictor(bundle).predict(text)[0] for text in texts]
    for a, b in zip(together, alone):
        assert a["label"] == b["label"]
        assert a["probabilities"]["positive"] == pytest.approx(b["probabilities"]["positive"], abs=1e-5)


def test_variant_is_chosen_by_name(bundle):
    assert Predictor(bundle).variant == "optimized"  # the bundle's default
    assert Predictor(bundle, "int8_dynamic").session is not None
    with pytest.raises(AlembertError, match="has no variant 'fp16'; choose one of fp32, optimized, int8_dynamic"):
        Predictor(bundle, "fp16")


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    return copy


def run_predict(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`python -m export.predict` in a child where torch, transformers and onnx cannot be imported."""
    code = BLOCK_HEAVY + "import runpy; sys.argv = ['export.predict'] + sys.argv[1:]; runpy.run_module('export.predict', run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True, env=env, cwd=REPO)


def test_predict_cli_runs_where_torch_cannot_be_imported(bundle):
    result = run_predict(str(bundle), "a wonderful film", "")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["a wonderful film", ""] and all(line["label"] in LABELS for line in lines)
    probe = run_predict("--help")
    assert probe.returncode == 0
    check = subprocess.run([sys.executable, "-c", BLOCK_HEAVY + "import torch"], capture_output=True, text=True)
    assert check.returncode != 0 and "not installed on this device" in check.stderr  # the block really blocks


def test_predict_cli_reads_jsonl_and_answers_every_line(bundle):
    stdin = '"plain string"\n{"id": 1, "text": "good"}\n\nnot json\n{"id": 2}\n{"id": 3, "text": 7}\n'
    result = run_predict(str(bundle), "--variant", "int8_dynamic", stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 5 and lines[0]["label"] in LABELS
    assert lines[1]["id"] == 1 and "probabilities" in lines[1]
    assert lines[2] == {"line": 4, "error": "not valid JSON (Expecting value)"}
    assert lines[3] == {"id": 2, "error": 'the object has no "text" field (nor "question" and "context")'}
    assert lines[4] == {"id": 3, "error": "expected a string, got int"}


def test_predict_lines_keeps_order_across_batches(bundle):
    out = io.StringIO()
    texts = [f'{{"id": {i}, "text": "film {i}"}}' for i in range(7)]
    predict_lines(Predictor(bundle), read_jsonl(texts), out, batch_size=3)
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == list(range(7))


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "model.onnx").unlink(), "model.onnx is missing from the bundle"),
    (lambda b: (b / "model.onnx").write_bytes(b"\x08garbage" * 10), "model.onnx is corrupt or not an ONNX model"),
    (lambda b: (b / "manifest.json").write_text("{not json"), "manifest.json is corrupt"),
    (lambda b: (b / "tokenizer.json").unlink(), "cannot read"),
])
def test_a_broken_bundle_gives_one_error_line(bundle, tmp_path, damage, message):
    copy = copy_bundle(bundle, tmp_path)
    damage(copy)
    result = run_predict(str(copy), "--variant", "fp32", "text")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alembert: error: ") and message in lines[0], result.stderr


def test_bench_reports_variants_and_pytorch_ratio_in_one_run(bundle, tmp_path, capsys):
    bench_main([str(bundle), "--batches", "1", "2", "--seqs", "8", "--runs", "3", "--warmup", "1", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "bench.json").read_text())
    import importlib.util

    from alembert import hardware
    others = ["fp32 on openvino"] + (["fp32 on openvino bf16"] if hardware.cpu().has_bf16 else [])
    names = ["pytorch", "fp32", "optimized", "int8_dynamic"] + (others if importlib.util.find_spec("openvino") else [])
    assert {(r["runtime"], r["batch"]) for r in rows} == {(n, b) for n in names for b in (1, 2)}
    pytorch = {r["batch"]: r["p50_ms"] for r in rows if r["runtime"] == "pytorch"}
    for r in rows:  # positive, finite figures, and the derived columns follow from this row's own median
        assert all(0 < r[key] < float("inf") for key in ("p50_ms", "p90_ms", "throughput_per_s")), r
        assert r["speedup_vs_pytorch"] == pytest.approx(pytorch[r["batch"]] / r["p50_ms"]), r
        assert r["throughput_per_s"] == pytest.approx(r["batch"] * 1000 / r["p50_ms"]), r
    summary = {r["runtime"]: r for r in json.loads((tmp_path / "bench_summary.json").read_text())}
    assert summary["int8_dynamic"]["size_mb"] < summary["fp32"]["size_mb"]
    assert all(r["peak_rss_mb"] and r["peak_rss_mb"] > 10 for name, r in summary.items() if " on " not in name)
    assert all(r["peak_rss_mb"] == "" for name, r in summary.items() if " on " in name)  # the probe loads onnxruntime
    assert "speedup_vs_pytorch" in capsys.readouterr().out


def test_bench_on_a_corrupt_variant_fails_in_one_line(bundle, tmp_path):
    copy = copy_bundle(bundle, tmp_path)
    (copy / "model.int8_dynamic.onnx").write_bytes(b"truncated")
    with pytest.raises(AlembertError, match="model.int8_dynamic.onnx is corrupt or not an ONNX model"):
        bench_main([str(copy), "--no-pytorch", "--no-memory", "--batches", "1", "--seqs", "8", "--runs", "2"])


# The files the README tells a device to copy beside the bundle, and nothing else (the alembert-runtime wheel's too).
DEVICE_FILES = tuple(line for line in (REPO / "runtime" / "files.txt").read_text().splitlines()
                     if line and not line.startswith("#"))


def run_on_device_copy(bundle: Path, device: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Copy DEVICE_FILES into `device` and run `python -m export.predict bundle ARGS` there, torch and the installed
    package hidden; returns the result and the environment it ran with."""
    for relative in DEVICE_FILES:
        (device / relative).parent.mkdir(parents=True, exist_ok=True)
        (device / relative).write_bytes((REPO / relative).read_bytes())
    code = BLOCK_HEAVY + UNINSTALLED + ("import runpy; sys.argv = ['export.predict'] + sys.argv[1:]; "
                                        "runpy.run_module('export.predict', run_name='__main__')")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code, str(bundle), *args], capture_output=True, text=True, env=env,
                            cwd=device)
    return result, env


def test_the_documented_device_files_alone_run_the_predictor(bundle, tmp_path):
    device = tmp_path / "device"
    result, env = run_on_device_copy(bundle, device, "a wonderful film")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] in LABELS
    loaded = "import json; print(json.dumps([m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in ('alembert', 'export')]))"
    probe = subprocess.run([sys.executable, "-c", UNINSTALLED + "import export.predict\n" + loaded], capture_output=True,
                           text=True, env=env, cwd=device)
    assert probe.returncode == 0 and all(path.startswith(str(device)) for path in json.loads(probe.stdout)), probe.stdout + probe.stderr


# A device has no alembert installed: drop the editable install's finders, so only the copied files can be imported.
UNINSTALLED = textwrap.dedent("""
    import sys
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
    sys.path_importer_cache.clear()
""")
