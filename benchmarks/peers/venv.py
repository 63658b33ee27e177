"""The peer's own virtual environment: optimum-onnx pins transformers 4.x, which cannot share alembert's 5.x.

It is created once (CPU torch first, as everywhere in this project, so that pip does not pull a CUDA build), then
reused while its marker file names the same requirements. Optimum runs there as a subprocess; everything it writes
is ONNX, which this process times beside the bundle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from alembert.errors import atomic_write_text, fail

TORCH = "torch==2.13.0"  # the CPU build on this project's machines; a bare `torch` would pull CUDA
PEER = "optimum-onnx[onnxruntime]==0.1.0"
MARKER = "alembert-peer.json"
SIDE_SCRIPT = Path(__file__).with_name("optimum_side.py")


def python_of(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def ensure_venv(venv: Path) -> Path:
    """The peer venv's Python, creating the venv when it is missing or was built for other requirements."""
    wanted = {"requirements": [TORCH, PEER]}
    marker = venv / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted and python_of(venv).is_file():
        return python_of(venv)
    shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run is rebuilt from scratch
    print(f"creating the peer venv {venv} ({TORCH}, then {PEER}); once, a few minutes", flush=True)
    _run([sys.executable, "-m", "venv", str(venv)], "create the venv")
    for requirement in (TORCH, PEER):
        _run([str(python_of(venv)), "-m", "pip", "install", "-q", requirement], f"pip install {requirement}")
    atomic_write_text(marker, json.dumps(wanted) + "\n")  # last: a venv with a marker is complete
    return python_of(venv)


def export_with_optimum(python: Path, model_dir: Path, out: Path, quantization: str, feed: Path) -> dict:
    """Optimum's fp32, O2, O3 and int8 exports of `model_dir` in `out` (reused when already there)."""
    record = out / "optimum.json"
    if not record.is_file():
        _run([str(python), str(SIDE_SCRIPT), str(model_dir), str(out), "--quantization", quantization, "--feed", str(feed)],
             "export the student with Optimum")
    return json.loads(record.read_text())


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        detail = lines[-1][:300] if lines else f"exit status {result.returncode}"
        raise fail(f"could not {what}: {detail}",
                   "check that the package registry is reachable, or pass --venv to a working peer venv")
