"""The teacher's cached logits kept on disk between runs (train.teacher_store): a second run over the same transfer
set with the same teacher reads them instead of running the teacher again.

An entry is keyed by what determines the logits: the teacher's weights and config, the task, the device type, and
every row's index and inputs. It holds each row's logits as the task trims them (flattened, with their shapes),
written to a temporary file and renamed, so a killed run never leaves a half-written entry. Only logits are
stored: layer features are far larger, and a logit-only objective is what the small students use.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from alembert.errors import ensure_space

SUFFIX = ".safetensors"


def store_key(teacher, rows, device: torch.device) -> str:
    """A digest of the teacher (weights and config), its task, the device type and the rows' indices and inputs."""
    digest = hashlib.blake2b(digest_size=16)
    model = teacher.model
    digest.update(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(device.type.encode())
    for row in rows:  # every field the collate reads (a paired row holds the teacher's own encoding too)
        digest.update(repr(sorted(row.items())).encode())
    return digest.hexdigest()


def load_rows(directory: str | Path, key: str) -> list[Tensor | None] | None:
    """The stored rows (None where no row has that index), or None when there is no entry or it does not read."""
    path = Path(directory).expanduser() / f"{key}{SUFFIX}"
    if not path.is_file():
        return None
    try:
        saved = load_file(str(path))
        flat, shapes, indices = saved["flat"], saved["shapes"].tolist(), saved["indices"].tolist()
        length = int(saved["length"])
    except Exception:  # a foreign, damaged or older file: ignored, recomputed and overwritten
        return None
    rows: list[Tensor | None] = [None] * length
    offset = 0
    for index, shape in zip(indices, shapes):
        size = int(torch.tensor(shape, dtype=torch.long).prod())
        rows[index] = flat[offset:offset + size].view(shape).clone()
        offset += size
    return rows


def save_rows(directory: str | Path, key: str, rows: list[Tensor | None]) -> Path:
    """Write the rows (one tensor per index, None where absent) atomically; returns the entry's path."""
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    kept = [(index, row) for index, row in enumerate(rows) if row is not None]  # one task: every row has one rank
    shapes = torch.tensor([list(row.shape) for _, row in kept], dtype=torch.long).reshape(len(kept), -1)
    flat = torch.cat([row.float().reshape(-1).cpu() for _, row in kept]) if kept else torch.zeros(0)
    ensure_space(folder, flat.numel() * 4 + 2**16, "the teacher store entry")
    path, temporary = folder / f"{key}{SUFFIX}", folder / f".{key}.{os.getpid()}.tmp"
    save_file({"flat": flat.contiguous(), "shapes": shapes.contiguous(),
               "indices": torch.tensor([index for index, _ in kept], dtype=torch.long),
               "length": torch.tensor(len(rows), dtype=torch.long)}, str(temporary))
    os.replace(temporary, path)
    return path
