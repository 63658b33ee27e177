"""benchmarks.peers without the peer venv (which needs the package registry): Optimum's side is stood in for by
copies of the bundle's own graphs, so every check, the timing in turns and the report run for real on a tiny model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from alembert.errors import AlembertError
from alembert.hardware import CPU
from benchmarks.peers import compare, report, venv
from export.measure import Timing


def cpu(*flags: str) -> CPU:
    return CPU("test CPU", 2, flags)


def test_quantization_config_follows_the_cpu():
    assert compare.quantization_for(cpu("avx2")) == "avx2"
    assert compare.quantization_for(cpu("avx2", "avx512f")) == "avx512"
    assert compare.quantization_for(cpu("avx2", "avx512f", "avx512_vnni")) == "avx512_vnni"
    assert compare.quantization_for(cpu("avx2", "avx_vnni")) == "avx2"  # VNNI without AVX-512: Optimum has no config for it


def test_goal_is_half_with_amx_and_seven_tenths_elsewhere():
    assert report.goal_ratio(cpu("avx2", "avx512f", "amx_bf16", "amx_int8")) == 0.5
    assert report.goal_ratio(cpu("avx2")) == 0.7


def timings(ms: dict[str, float]) -> dict:
    return {name: Timing(value, value, 1) for name, value in ms.items()}


def test_summary_compares_each_sides_best_and_names_variants_slower_than_pytorch():
    table = {(2, 1): timings({"pytorch": 4.0, "fp32": 3.0, "int8_dynamic": 1.5, "fp16": 5.0,
                              "Optimum fp32": 3.2, "Optimum int8": 2.0})}
    [row] = report.summary_rows(table, cpu("avx2"))
    assert row["bundle best"] == "bundle int8_dynamic 1.50 ms"
    assert row["Optimum best"] == "Optimum int8 2.00 ms"
    assert row["ratio"] == "0.75"
    assert row["goal <= 0.7"] == "missed by 0.05"
    assert row["bundle variants slower than PyTorch"] == "bundle fp16"
    table[(2, 1)]["int8_dynamic"] = Timing(1.2, 1.2, 1)
    assert report.summary_rows(table, cpu("avx2"))[0]["goal <= 0.7"] == "met"


def test_a_folder_that_is_no_model_is_refused(tmp_path):
    config = compare.PeersConfig(tmp_path, None, tmp_path / "venv", tmp_path / "work")
    with pytest.raises(AlembertError, match="is not a saved model"):
        compare.work_dir(config)


def test_a_data_dir_without_the_split_files_is_refused(tmp_path):
    with pytest.raises(AlembertError, match="lacks"):
        compare.data_config(tmp_path)


def test_a_venv_with_its_marker_is_reused_without_pip(tmp_path, monkeypatch):
    python = venv.python_of(tmp_path)
    python.parent.mkdir(parents=True)
    python.write_text("")
    (tmp_path / venv.MARKER).write_text(json.dumps({"requirements": [venv.TORCH, venv.PEER]}))
    monkeypatch.setattr(venv, "_run", lambda *a: pytest.fail("pip ran for a complete venv"))
    assert venv.ensure_venv(tmp_path) == python


def test_a_failing_step_is_one_line_naming_it():
    with pytest.raises(AlembertError, match="could not export the student with Optimum: boom"):
        venv._run([sys.executable, "-c", "import sys; sys.exit('boom')"], "export the student with Optimum")


def test_optimum_side_refuses_a_model_of_no_known_task(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    result = subprocess.run([sys.executable, str(venv.SIDE_SCRIPT), str(tmp_path), str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "knows no task for BertForMaskedLM" in result.stderr
    assert not (tmp_path / "out").exists()


def test_every_model_is_checked_timed_and_reported(tiny_dir, tmp_path, monkeypatch):
    model_dir = tiny_dir("bert", 2)
    config = compare.PeersConfig(model_dir, None, tmp_path / "venv", tmp_path / "work", batches=(1, 4), threads=(1,),
                                 seq_len=16, runs=5)

    def stand_in(python, model, out, quantization, feed):  # Optimum's graphs: copies of the bundle's fp32 and int8
        out.mkdir(parents=True)
        bundle = out.parent / "bundle"
        for name, file in (("fp32", "model.onnx"), ("int8", "model.int8_dynamic.onnx")):
            shutil.copy(bundle / file, out / f"{name}.onnx")
        return {"files": {"fp32": "fp32.onnx", "int8": "int8.onnx"}, "versions": {"optimum": "stand-in"},
                "quantization": f"AutoQuantizationConfig.{quantization}()", "optimization": {},
                "reference_logits": None}

    monkeypatch.setattr(compare, "ensure_venv", lambda path: path / "bin" / "python")
    monkeypatch.setattr(compare, "export_with_optimum", stand_in)
    folder = compare.work_dir(config)
    bundle, files, optimum = compare.prepare(config, folder)
    checks = compare.check_models(compare.open_all(bundle, model_dir, files, 1), folder, optimum, config)
    assert checks["Optimum fp32"]["max_abs_diff"] == pytest.approx(checks["fp32"]["max_abs_diff"], abs=1e-7)
    assert checks["fp32"]["max_abs_diff"] < 1e-4 and checks["pytorch"]["max_abs_diff"] == 0.0
    assert 0 < checks["Optimum int8"]["max_abs_diff"] < 1.0  # quantized: close, not equal
    times = compare.time_all(bundle, files, config, 50, ["input_ids", "attention_mask", "token_type_ids"])
    assert set(times) == {(1, 1), (1, 4)}
    assert {"pytorch", "fp32", "Optimum fp32", "Optimum int8"} <= set(times[(1, 4)])
    page = report.write(tmp_path / "out", times, checks, optimum, {}, command="test", seq_len=16)
    text = page.read_text()
    assert "| b4 1t |" in text and "Optimum int8" in text and "bundle fp32" in text
    assert (tmp_path / "out" / "peers.png").stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "peers.json").read_text())
    assert saved["machine"]["cores"] >= 1 and len(saved["summary"]) == 2
    assert np.isfinite([float(row["ratio"]) for row in saved["summary"]]).all()
