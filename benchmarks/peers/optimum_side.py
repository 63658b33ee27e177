"""Optimum's side of `python -m benchmarks.peers`, run by the peer venv's Python, never imported by alembert.

`python optimum_side.py MODEL_DIR OUT_DIR --quantization avx2|avx512|avx512_vnni` exports the saved model with
Optimum the way its documentation does it: `main_export` (fp32), `ORTOptimizer` at levels O2 and O3 (O3 adds a GELU
approximation), and `ORTQuantizer` with the `AutoQuantizationConfig` of the CPU, dynamic, per-tensor. It writes
OUT_DIR/optimum.json: each model's ONNX file, the logits transformers 4.x's PyTorch model gives on a fixed feed (so
the benchmark can check that Optimum exported the same model), and the versions that did it.

Standalone on purpose: optimum-onnx pins transformers 4.x, and alembert needs 5.x.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

TASKS = {  # the saved model's architecture suffix -> Optimum's task name
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}
LEVELS = ("O2", "O3")
PACKAGES = ("optimum", "optimum-onnx", "transformers", "onnxruntime", "torch")


def task_of(model_dir: Path) -> str:
    architecture = (json.loads((model_dir / "config.json").read_text()).get("architectures") or [""])[0]
    for suffix, task in TASKS.items():
        if architecture.endswith(suffix):
            return task
    raise SystemExit(f"error: Optimum's side knows no task for {architecture or 'a model without architectures'}; "
                     f"fix: pass a model saved by python -m distill ({', '.join(TASKS)})")


def export_fp32(model_dir: Path, out: Path, task: str) -> Path:
    from optimum.exporters.onnx import main_export

    main_export(str(model_dir), output=out, task=task)  # its own opset and validation against PyTorch
    return out / "model.onnx"


def optimize(fp32_dir: Path, out: Path, level: str) -> Path:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    optimizer = ORTOptimizer.from_pretrained(fp32_dir, file_names=["model.onnx"])
    optimizer.optimize(save_dir=out, optimization_config=getattr(AutoOptimizationConfig, level)())
    return next(out.glob("model*optimized.onnx"))


def quantize(fp32_dir: Path, out: Path, cpu: str) -> Path:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx")
    config = getattr(AutoQuantizationConfig, cpu)(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=out, quantization_config=config)
    return next(out.glob("model*quantized.onnx"))


def reference_logits(model_dir: Path, feed_path: Path) -> list:
    """transformers 4.x's own logits for the benchmark's feed: the PyTorch model Optimum exported from."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoModelForQuestionAnswering

    classes = {"text-classification": AutoModelForSequenceClassification,
               "token-classification": AutoModelForTokenClassification,
               "question-answering": AutoModelForQuestionAnswering}
    model = classes[task_of(model_dir)].from_pretrained(model_dir).eval()
    feed = {name: torch.from_numpy(array) for name, array in np.load(feed_path).items()}
    with torch.inference_mode():
        output = model(**{name: value for name, value in feed.items() if name in model.forward.__code__.co_varnames})
    first = output.logits if hasattr(output, "logits") else output.start_logits
    return first.float().numpy().tolist()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--quantization", default="avx2", choices=["avx2", "avx512", "avx512_vnni", "arm64"])
    parser.add_argument("--feed", type=Path, help="an .npz of inputs whose PyTorch logits go into optimum.json")
    args = parser.parse_args(argv)
    task = task_of(args.model_dir)
    work = args.out_dir.with_name(args.out_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    fp32 = export_fp32(args.model_dir, work / "fp32", task)
    files = {"fp32": fp32}
    for level in LEVELS:
        files[level] = optimize(fp32.parent, work / level, level)
    files["int8"] = quantize(fp32.parent, work / "int8", args.quantization)
    record = {"task": task, "quantization": f"AutoQuantizationConfig.{args.quantization}(is_static=False, per_channel=False)",
              "optimization": {level: f"AutoOptimizationConfig.{level}()" for level in LEVELS},
              "files": {name: str(path.relative_to(work)) for name, path in files.items()},
              "versions": {name: version(name) for name in PACKAGES},
              "reference_logits": reference_logits(args.model_dir, args.feed) if args.feed else None}
    (work / "optimum.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(args.out_dir, ignore_errors=True)
    work.rename(args.out_dir)  # a finished export appears whole, or not at all


if __name__ == "__main__":
    main(sys.argv[1:])
