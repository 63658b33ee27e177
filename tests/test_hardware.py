"""CPU features and what is chosen from them: int8's reduce_range for export, bf16 autocast for training."""

from __future__ import annotations

import pytest

from alembert import hardware
from alembert.hardware import CPU, bf16_training, int8_reduce_range
from export.config import ExportConfig
from export.config import int8_reduce_range as export_reduce_range

AVX2_ONLY = CPU("AMD EPYC", 2, ("avx2",))
AVX512_VNNI = CPU("Intel Xeon", 2, ("avx2", "avx512f", "avx512_vnni"))
ZEN4 = CPU("AMD EPYC", 2, ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16"))
SAPPHIRE_RAPIDS = CPU("Intel Xeon", 2, ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"))
UNKNOWN = CPU("arm64", 8, ())


@pytest.mark.parametrize("machine, expected", [(AVX2_ONLY, True), (AVX512_VNNI, False), (ZEN4, False),
                                               (SAPPHIRE_RAPIDS, False), (UNKNOWN, False)])
def test_int8_reduce_range_is_on_only_where_u8s8_products_can_saturate(machine, expected):
    assert int8_reduce_range(machine)[0] is expected


@pytest.mark.parametrize("machine, expected, named", [(AVX2_ONLY, False, "no bf16"), (AVX512_VNNI, False, "no bf16"),
                                                      (ZEN4, True, "AVX-512-BF16"), (SAPPHIRE_RAPIDS, True, "AMX")])
def test_bf16_training_needs_bf16_dot_product_instructions(machine, expected, named):
    chosen, why = bf16_training(machine)
    assert chosen is expected and named in why


def test_the_export_setting_overrides_the_cpu_and_none_asks_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu", lambda: AVX2_ONLY)
    assert export_reduce_range(ExportConfig()) == (True, int8_reduce_range(AVX2_ONLY)[1])
    assert export_reduce_range(ExportConfig(reduce_range=False)) == (False, "set by reduce_range")


def test_this_machine_is_read_from_proc_cpuinfo():
    machine = hardware.cpu()
    assert machine.cores >= 1 and set(machine.flags) <= set(hardware.SPEED_FLAGS)
    assert machine.describe().startswith(machine.model) and machine.record()["flags"] == list(machine.flags)


@pytest.mark.parametrize("machine, dtype", [(ZEN4, "bfloat16"), (SAPPHIRE_RAPIDS, "bfloat16"), (AVX2_ONLY, None)])
def test_precision_auto_trains_in_bf16_only_where_the_cpu_has_bf16_instructions(machine, dtype, monkeypatch, capsys):
    import torch

    from distill.engine import autocast_dtype

    monkeypatch.setattr(hardware, "cpu", lambda: machine)
    chosen = autocast_dtype("auto", torch.device("cpu"), "student")
    assert chosen == (getattr(torch, dtype) if dtype else None)
    said = capsys.readouterr().out.strip()
    assert said.startswith("student: precision=auto on cpu: ") and (("fp32 (" in said) == (dtype is None))
    assert autocast_dtype("fp32", torch.device("cpu")) is None and autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
