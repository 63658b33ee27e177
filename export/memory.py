"""`python -m export.memory KIND PATH BATCH SEQ THREADS`: peak resident memory of one model in a fresh process.

Run once per model by `export.bench`, so each figure holds only that model's runtime: the ORT
probe never imports torch, whose own libraries would add hundreds of MB to every figure.
Prints one JSON line: {"baseline_mb", "peak_mb"} (peak includes the Python interpreter).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def rss_peak_mb() -> float:
    """This process's high-water resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over fork+exec, so a child of a big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; the best we have elsewhere


def feed(names, batch: int, seq: int) -> dict[str, np.ndarray]:
    ids = np.full((batch, seq), 7, dtype=np.int64)
    values = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {name: values[name] for name in names}


def probe_onnx(path: str, batch: int, seq: int, threads: int) -> None:
    import onnxruntime as ort  # imported here so the baseline is the bare interpreter plus numpy

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    session.run(None, feed([i.name for i in session.get_inputs()], batch, seq))


def probe_pytorch(path: str, batch: int, seq: int, threads: int) -> None:
    import torch

    from alembert.modeldir import load_model_dir  # the task's Auto class, from the model's config

    torch.set_num_threads(threads)
    model = load_model_dir(path).eval()
    with torch.inference_mode():  # token types default to zeros, and DistilBERT takes none
        model(**{name: torch.from_numpy(array) for name, array in feed(INPUT_NAMES[:2], batch, seq).items()})


PROBES = {"onnx": probe_onnx, "pytorch": probe_pytorch}


def main(argv: list[str]) -> None:
    kind, path, batch, seq, threads = argv
    baseline = rss_peak_mb()
    PROBES[kind](path, int(batch), int(seq), int(threads))
    print(json.dumps({"baseline_mb": baseline, "peak_mb": rss_peak_mb()}))


if __name__ == "__main__":
    main(sys.argv[1:])
