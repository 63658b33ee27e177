"""Shared by the sweep tests: a tiny sweep file and a CLI runner (small demo data, one thread, no progress bars)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = ["baseline=false", "data.demo.train_size=64", "data.demo.dev_size=32", "data.demo.test_size=32",
             "data.max_length=16", "train.epochs=1", "train.batch_size=16", "finetune.mode=never", "latency_seq_len=8"]
TINY_SPACE = {"kd.temperature": {"type": "float", "low": 1.0, "high": 8.0},
              "student.num_layers": {"type": "int", "low": 1, "high": 2}}
TWO_OBJECTIVES = [{"metric": "dev_accuracy", "direction": "maximize"}, {"metric": "latency_ms", "direction": "minimize"}]


def sweep_file(directory: Path, teacher: Path, **changes) -> Path:
    """A sweep YAML over a tiny teacher; `changes` replace its top-level settings."""
    config = {"study_name": "tiny", "n_trials": 2, "objectives": TWO_OBJECTIVES, "seed": 0,
              "base_overrides": TINY_BASE + [f"teacher={teacher}"], "space": TINY_SPACE,
              "out_dir": str(directory / "sweep"), "heartbeat": {"interval": 1, "grace_period": 3}, "poll_s": 0.5}
    config.update(changes)
    path = directory / f"{config['study_name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def environment() -> dict:
    return {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def sweep_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "distill.sweep", *args], cwd=ROOT, env=environment(),
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def start_worker(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", "distill.sweep", *args], cwd=ROOT, env=environment(),
                                stdout=handle, stderr=subprocess.STDOUT)
