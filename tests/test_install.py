"""Installs as users install: the wheel, in a fresh venv, runs the CLI from a directory outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", "outputs", "multirun", "sweeps", "build", "*.egg-info", "__pycache__", ".venv",
                              ".pytest_cache", "results")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv holding the built wheel; it sees this interpreter's other packages (torch & co.) but not the repo."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)  # build from a copy: the clone stays free of build/ and egg-info
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"),
                    str(source)], check=True, capture_output=True, timeout=600)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(work / "venv")], check=True, timeout=300)
    python = work / "venv" / "bin" / "python"
    wheel = next((work / "dist").glob("alembert-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    return work / "venv"


def outside_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "ALEMBERT_DEBUG")}
    env.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    return env


def test_the_installed_package_is_the_wheel_not_the_clone(venv, tmp_path):
    code = "import alembert.conf, distill, export; print(distill.__file__); print(alembert.conf.CONF_DIR)"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=outside_env(), capture_output=True,
                         text=True, check=True).stdout.split()
    assert all(str(venv) in line for line in out), out
    assert (Path(out[1]) / "config.yaml").is_file()
    assert (Path(out[1]) / "recipe" / "kd.yaml").is_file() and (Path(out[1]) / "sweep" / "demo.yaml").is_file()


def test_alembert_distill_runs_from_another_directory(venv, tiny_dir, tmp_path):
    args = ["distill", f"teacher={tiny_dir('bert', layers=2)}", "finetune.mode=never", "data.demo.train_size=32",
            "data.demo.dev_size=8", "data.demo.test_size=8", "data.max_length=16", "student.num_layers=1", "baseline=false",
            "train.epochs=1", "latency_seq_len=8", f"hydra.run.dir={tmp_path}/run"]
    result = subprocess.run([str(venv / "bin" / "alembert"), *args], cwd=tmp_path, env=outside_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [row["model"] for row in rows] == ["teacher", "student (KD)"]
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()


def test_the_console_script_and_python_m_name_the_same_commands(venv, tmp_path):
    usage = subprocess.run([str(venv / "bin" / "alembert"), "--help"], env=outside_env(), capture_output=True, text=True,
                           check=True).stdout
    for command in ("distill", "compress", "export", "predict", "sweep"):
        assert f"  {command} " in usage
    bad = subprocess.run([str(venv / "bin" / "alembert"), "predict", str(tmp_path / "missing")], cwd=tmp_path,
                         env=outside_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("alembert: error:") and "Traceback" not in bad.stderr
