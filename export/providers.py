"""onnxruntime's execution providers by short name (cpu, cuda, tensorrt, openvino, coreml, directml, rocm).

A session asks for the named provider with the CPU provider behind it, so an operator the accelerator lacks still
runs. A provider this onnxruntime build does not have (onnxruntime-gpu brings CUDA and TensorRT,
onnxruntime-openvino brings OpenVINO) falls back to the CPU alone, said once in one line. Torch-free, like the runtime.
"""

from __future__ import annotations

import functools
import sys

import onnxruntime as ort

from alembert.errors import fail

CPU = "CPUExecutionProvider"
EXECUTION_PROVIDERS = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
INSTALL = {"cuda": "onnxruntime-gpu", "tensorrt": "onnxruntime-gpu (and TensorRT)", "openvino": "onnxruntime-openvino",
           "directml": "onnxruntime-directml", "rocm": "onnxruntime-rocm", "coreml": "onnxruntime on macOS"}


def session_providers(name: str) -> list[str]:
    """The providers list for an InferenceSession that should run on `name`."""
    if name not in EXECUTION_PROVIDERS:
        raise fail(f"execution provider '{name}' is unknown", f"use one of {', '.join(EXECUTION_PROVIDERS)}")
    wanted = EXECUTION_PROVIDERS[name]
    if wanted == CPU:
        return [CPU]
    if wanted not in ort.get_available_providers():
        _say_fallback(name)
        return [CPU]
    return [wanted, CPU]


@functools.cache
def _say_fallback(name: str) -> None:
    print(f"alembert: this onnxruntime has no {EXECUTION_PROVIDERS[name]} (it has {', '.join(ort.get_available_providers())}); "
          f"running on {CPU}; install {INSTALL.get(name, 'an onnxruntime build with it')} for {name}", file=sys.stderr)
