"""What the CPU can do fast: its model and the instruction-set flags int8 and bf16 speed depend on.

Benchmarks print it beside every figure, export manifests record it, and the settings that depend on it (int8's
reduce_range, bf16 autocast for training) are chosen from it. Torch-free, so the runtime can read it too.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# What int8 and bf16 speed depend on, in the order they are printed.
SPEED_FLAGS = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
VNNI_FLAGS = frozenset({"avx_vnni", "avx512_vnni", "amx_int8"})  # integer dot-product instructions
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # bf16 dot-product instructions


@dataclass(frozen=True)
class CPU:
    model: str
    cores: int
    flags: tuple[str, ...]  # the SPEED_FLAGS it has

    def describe(self) -> str:
        return f"{self.model}, {self.cores} cores, flags: {' '.join(self.flags) or 'unknown'}"

    def record(self) -> dict:
        return {"model": self.model, "cores": self.cores, "flags": list(self.flags)}

    @property
    def known(self) -> bool:
        """False off Linux, where no flags are read: nothing is chosen from them then."""
        return bool(self.flags)

    @property
    def has_vnni(self) -> bool:
        return bool(VNNI_FLAGS & set(self.flags))

    @property
    def has_bf16(self) -> bool:
        return bool(BF16_FLAGS & set(self.flags))


@functools.cache
def cpu() -> CPU:
    info = _cpu_info()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    present = next((set(line.split(":", 1)[1].split()) for line in info.splitlines() if line.startswith("flags")), set())
    return CPU(model, os.cpu_count() or 1, tuple(flag for flag in SPEED_FLAGS if flag in present))


def _cpu_info() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the model from platform, no flags
        return ""


def int8_reduce_range(machine: CPU) -> tuple[bool, str]:
    """onnxruntime's `reduce_range` for this CPU, and why: 7-bit weights where u8s8 products can saturate (x86
    without VNNI), full 8 bits where VNNI's dot products cannot, or where the flags are unknown."""
    if not machine.known:
        return False, "CPU flags unknown: full-range int8"
    if "avx2" in machine.flags and not machine.has_vnni:
        return True, "AVX2 without VNNI: 7-bit weights, so u8s8 multiply-adds cannot saturate"
    return False, "VNNI present: full-range int8"


def bf16_training(machine: CPU) -> tuple[bool, str]:
    """Whether bf16 autocast can speed training on this CPU (bf16 dot-product instructions), and why."""
    if machine.has_bf16:
        return True, f"{'AMX' if 'amx_bf16' in machine.flags else 'AVX-512-BF16'}: bf16 autocast"
    return False, "no bf16 instructions: fp32"
