"""Torch-free output decoders for the ONNX runtime: each task names one (Task.decoder), the bundle's manifest
records it, and the runtime looks it up here instead of branching on the task.

A decoder maps one row of model outputs (numpy) and the label names to the result fields of one prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from alembert.registry import Registry

Decoder = Callable[[np.ndarray, Sequence[str]], dict]
DECODERS: Registry[Decoder] = Registry("output decoder")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _label_distribution(logits: np.ndarray, labels: Sequence[str]) -> dict:
    probabilities = softmax(logits)
    names = list(labels) if len(labels) == len(probabilities) else [str(i) for i in range(len(probabilities))]
    return {"label": names[int(probabilities.argmax())],
            "probabilities": {name: float(p) for name, p in zip(names, probabilities)}}


def _score(logits: np.ndarray, labels: Sequence[str]) -> dict:
    return {"score": float(logits[0])}


DECODERS.add("softmax", _label_distribution)
DECODERS.add("score", _score)
