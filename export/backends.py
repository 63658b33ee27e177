"""The runtimes a bundle runs on: onnxruntime (always there) and OpenVINO (the optional `openvino` extra).

Each is one registry entry. A backend opens an ONNX file as a session with `.input_names` and `.run(feed)`, which
returns the graph's outputs as numpy arrays, in order. OpenVINO runs the same ONNX files, with a precision hint:
"bf16" lets its CPU plugin use AMX or AVX-512-BF16 kernels. It cannot run graphs that use onnxruntime's own fused
operators (the `optimized` graph and what is quantized from it). Torch-free, like the runtime.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from alembert.errors import fail
from alembert.registry import Registry
from export.providers import session_providers

DEFAULT = "onnxruntime"
ORT_CONTRIB_DOMAIN = "com.microsoft"  # onnxruntime's fused operators: only onnxruntime runs them


@dataclass(frozen=True)
class Backend:
    name: str
    install: str  # how to get it, for the line that says it is missing
    available: Callable[[], bool]
    open: Callable[[Path, int | None, str | None, str], object]  # (path, threads, precision hint, provider) -> session
    hints: tuple[str | None, ...] = (None,)  # the precision hints a bundle checks and times
    runs_contrib_ops: bool = True

    def version(self) -> str | None:
        if not self.available():
            return None
        from importlib.metadata import version
        return version(self.name)


BACKENDS: Registry[Backend] = Registry("runtime")


class OrtSession:
    def __init__(self, path: Path, threads: int | None, hint: str | None = None, provider: str = "cpu"):
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings (unused initializers) are not the user's concern
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=session_providers(provider))
        self.providers = self.session.get_providers()  # what it runs on, after any fallback
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {name: feed[name] for name in self.input_names})


@functools.cache
def _openvino_core():
    """One OpenVINO Core per process, as OpenVINO advises, alive as long as any model compiled by it."""
    import openvino

    return openvino.Core()


class OpenVinoSession:
    def __init__(self, path: Path, threads: int | None, hint: str | None = None, provider: str = "cpu"):
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint or "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.core = _openvino_core()
        self.compiled = self.core.compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [_feed_name(port) for port in self.compiled.inputs]
        self.providers = ["OpenVINO CPU plugin"]  # OpenVINO picks its own device; onnxruntime's providers do not apply

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer({name: feed[name] for name in self.input_names})
        return [np.asarray(results[port]) for port in self.compiled.outputs]


def _feed_name(port) -> str:
    """The port's name in the ONNX graph's inputs: OpenVINO may also give it an inner tensor's name (a cast of the
    mask, in a BiLSTM student's graph) and pick that one as `any_name`."""
    names = sorted(port.get_names())
    return next((name for name in names if "/" not in name), port.any_name)


BACKENDS.add(DEFAULT, Backend(DEFAULT, "pip install onnxruntime", lambda: True, OrtSession))
BACKENDS.add("openvino", Backend("openvino", "pip install 'alembert[openvino]'",
                                 lambda: importlib.util.find_spec("openvino") is not None, OpenVinoSession,
                                 hints=("f32", "bf16"), runs_contrib_ops=False))


def open_session(path: Path, runtime: str = DEFAULT, threads: int | None = None, hint: str | None = None,
                 provider: str = "cpu"):
    """`path` opened on `runtime` (onnxruntime: on the execution `provider`, export.providers), with one clear line
    when the file is missing or unreadable."""
    backend = BACKENDS[runtime]
    if not path.is_file():
        raise fail(f"{path} is missing from the bundle", "copy the whole bundle directory, or re-export it")
    try:
        return backend.open(path, threads, hint, provider)
    except Exception as err:  # each runtime raises its own exception types for unreadable or invalid graphs
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise fail(f"{path} is corrupt or not an ONNX model ({runtime}: {detail})",
                   "copy the file again, or re-export the bundle with python -m export") from None


def uses_contrib_ops(path: Path) -> bool:
    """Whether the graph has nodes of onnxruntime's own fused operators (the weights are not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(node.domain == ORT_CONTRIB_DOMAIN for node in model.graph.node)
