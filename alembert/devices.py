"""Where training runs: `train.device` (auto, cpu, cuda, cuda:N, mps) resolved to the torch.device of this process.

Under torchrun each process takes the GPU of its LOCAL_RANK, so `device=cuda` on a node of 8 GPUs with 8 ranks puts
one rank on each. A device this torch build cannot see is refused in one line, before any model loads.
"""

from __future__ import annotations

import os

import torch

from alembert import hardware
from alembert.errors import fail
from alembert.training import DEVICE_CHOICES



def local_rank() -> int:
    """This process's index on its node under torchrun; 0 outside it."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(spec: str, key: str = "train.device") -> torch.device:
    """The device `spec` names, checked against this machine; `auto` is this rank's GPU where CUDA is available, else
    the CPU (MPS only when asked for: several of its kernels are still missing or slower than the CPU's)."""
    if spec == "auto":
        return _cuda(None, key) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise fail(f"{key}=mps but this machine or torch build has no Apple GPU (MPS)", f"use {key}=cpu or auto")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        return _cuda(int(spec.split(":", 1)[1]) if ":" in spec else None, key)
    raise fail(f"{key}={spec} is not a device", f"set {key} to {DEVICE_CHOICES}")


def _cuda(index: int | None, key: str) -> torch.device:
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise fail(f"{key} asks for a CUDA GPU but torch {torch.__version__} ({build}) sees none",
                   f"use {key}=cpu (or auto), or install a CUDA build of torch on a machine with a GPU")
    count = torch.cuda.device_count()
    chosen = local_rank() if index is None else index
    if chosen >= count:
        where = f"LOCAL_RANK={chosen}" if index is None else f"cuda:{chosen}"
        raise fail(f"{key}: {where} names GPU {chosen} but this machine has {count}",
                   f"start at most {count} processes per node, or pick cuda:0 .. cuda:{count - 1}")
    return torch.device("cuda", chosen)


def pins_memory(device: torch.device) -> bool:
    """Page-locked batches let host-to-GPU copies run asynchronously (non_blocking); pointless on the CPU."""
    return device.type == "cuda"


def collective_backend(device: torch.device) -> str:
    """NCCL for processes on CUDA GPUs, gloo otherwise (a CPU run on a GPU machine must not pick NCCL)."""
    return "nccl" if device.type == "cuda" else "gloo"


def device_record(device: torch.device, dtype: torch.dtype | None) -> dict:
    """What the run summary says about where and how it trained: device, its name, autocast dtype and CPU flags."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else hardware.cpu().model
    return {"device": str(device), "device_name": name, "dtype": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
            "cpu": hardware.cpu().describe()}
