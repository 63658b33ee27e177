"""Size and speed of a model, and the summary table a run ends with."""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from alembert.errors import atomic_write_text


def size_on_disk_mb(model_dir: str | Path) -> float:
    """Bytes of the weight files in a saved model directory, in MB (10^6)."""
    files = [p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin", ".onnx", ".pt")]
    return sum(p.stat().st_size for p in files) / 1e6


@torch.no_grad()
def latency_ms(model: nn.Module, *, seq_len: int = 64, batch_size: int = 1, runs: int = 30, warmup: int = 5,
               vocab_size: int | None = None) -> float:
    """Median wall time of one forward pass at (batch_size, seq_len) on this CPU, in milliseconds (a model trained on a
    GPU is timed as a CPU copy: the figure is the edge device's)."""
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    model.eval()
    vocab = vocab_size or model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(5, vocab, (batch_size, seq_len), generator=generator),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
    }
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(**inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def save_table(rows: list[dict], columns: list[str], out_dir: str | Path, name: str) -> str:
    """Write `name`.md and `name`.json atomically and return the markdown."""
    table = markdown_table(rows, columns)
    atomic_write_text(Path(out_dir) / f"{name}.md", table + "\n")
    atomic_write_text(Path(out_dir) / f"{name}.json", json.dumps(rows, indent=2) + "\n")
    return table
