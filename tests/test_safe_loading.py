"""Nothing the packages read back is unpickled into arbitrary objects: int8 models are safetensors, and
training checkpoints load with torch.load(weights_only=True)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch

from compress.passes.quantize import QuantizeDynamicConfig
from compress.registry import apply
from compress.saving import INT8_WEIGHTS, OLD_INT8_WEIGHTS, load_compressed, save_compressed
from distill import engine
from distill.checkpoint import LATEST_FILE, META_FILE, STATE_FILE
from alembert.tasks import task_named
from alembert.data import DataConfig, encode, load_task, loader
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from distill.losses import Objective, Term
from alembert.modeldir import load_model_dir, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "compress", "export", "alembert", "benchmarks")
UNSAFE = re.compile(r"weights_only\s*=\s*False|trust_remote_code\s*=\s*True")
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle"}


def test_no_package_loads_unsafely():
    files = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert files, f"no package sources found under {ROOT}"
    hits = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in files
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if UNSAFE.search(line)]
    assert not hits, "unsafe loading:\n" + "\n".join(hits)


# --- dynamic-int8 models --------------------------------------------------------------------------

@pytest.fixture
def int8_saved(tiny_dir, tmp_path):
    """(directory, quantized model, tokenizer, batch): a tiny BERT through the quantize_dynamic pass, saved."""
    source = tiny_dir("bert", layers=2)
    tokenizer = load_tokenizer(str(source))
    model = apply(load_model_dir(source).eval(), QuantizeDynamicConfig())
    batch = dict(tokenizer(["the movie was brilliant but the ending was dull", "not bad"], padding=True, return_tensors="pt"))
    return save_compressed(model, tokenizer, tmp_path / "int8"), model, batch


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_int8_round_trip_is_exact_and_pickle_free(int8_saved):
    directory, model, batch = int8_saved
    reloaded = load_compressed(directory)
    assert torch.equal(_logits(reloaded, batch), _logits(model, batch))
    assert (directory / INT8_WEIGHTS).is_file() and (directory / "config.json").is_file()
    assert not [p.name for p in directory.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    int8 = safetensors.torch.load_file(directory / INT8_WEIGHTS)
    assert any(t.dtype == torch.int8 for t in int8.values())


def test_a_truncated_int8_file_fails_with_its_name(int8_saved):
    path = int8_saved[0] / INT8_WEIGHTS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AlembertError, match=re.escape(INT8_WEIGHTS)) as err:
        load_compressed(path.parent)
    assert "\n" not in str(err.value) and "; " in str(err.value)


def test_an_int8_file_missing_a_tensor_fails_in_one_line(int8_saved):
    path = int8_saved[0] / INT8_WEIGHTS
    tensors = safetensors.torch.load_file(path)
    dropped = next(key for key in tensors if key.endswith(".int8_weight"))
    safetensors.torch.save_file({k: v for k, v in tensors.items() if k != dropped}, path)
    with pytest.raises(AlembertError, match=rf"{re.escape(INT8_WEIGHTS)} lacks 1 tensor.*{re.escape(dropped)}"):
        load_compressed(path.parent)


def test_an_old_pickled_int8_model_is_refused(int8_saved):
    directory = int8_saved[0]
    (directory / INT8_WEIGHTS).rename(directory / OLD_INT8_WEIGHTS)
    with pytest.raises(AlembertError, match=rf"{re.escape(OLD_INT8_WEIGHTS)} is an int8 model in the old pickled format"):
        load_compressed(directory)


# --- training checkpoints -------------------------------------------------------------------------

def _fit(student_dir: Path, work: Path, resume: bool = False):
    """Two short epochs on the demo task, checkpointing every 2 steps."""
    tokenizer = load_tokenizer(str(student_dir))
    data = DataConfig(demo=DemoConfig(train_size=24, dev_size=8, test_size=8), max_length=16)
    task = load_task(data)
    train = loader(encode(task, "train", tokenizer, data), tokenizer, batch_size=6, task=task_named("classification"), shuffle=True, seed=3)
    dev = loader(encode(task, "dev", tokenizer, data), tokenizer, batch_size=8, task=task_named("classification"))
    config = engine.TrainConfig(epochs=2, batch_size=6, lr=3e-3, checkpoint_every=2, resume=resume, seed=5)
    return engine.fit(load_model_dir(student_dir), train, dev, Objective((Term("hard", 1.0),)), config,
                      checkpoint_dir=work, desc="safe")


@pytest.fixture
def checkpointed(tiny_dir, tmp_path) -> tuple[Path, Path, Path]:
    """(student dir, checkpoint dir, the latest state.pt) after a finished run."""
    student, work = tiny_dir("bert", layers=1), tmp_path / "checkpoints"
    _fit(student, work)
    return student, work, work / (work / LATEST_FILE).read_text().strip() / STATE_FILE


def test_a_checkpoint_loads_with_weights_only(checkpointed):
    payload = torch.load(checkpointed[2], map_location="cpu", weights_only=True)
    assert {"loop", "modules", "optimizer", "scheduler", "scaler", "rng"} <= set(payload)
    assert isinstance(payload["rng"][0]["numpy"][1], torch.Tensor)


@pytest.mark.parametrize("content", ["garbage", "foreign object"])
def test_an_unreadable_checkpoint_fails_on_resume(content, checkpointed):
    student, work, state = checkpointed
    if content == "garbage":
        state.write_bytes(b"not a torch file")
    else:  # a well-formed pickle that weights_only refuses: it would run code with weights_only=False
        torch.save({"loop": argparse.Namespace(step=1)}, state)
    with pytest.raises(AlembertError, match=r"the checkpoint .* cannot be read .*; delete .* and resume again") as err:
        _fit(student, work, resume=True)
    assert "\n" not in str(err.value)


def test_an_old_format_checkpoint_is_refused_by_its_fingerprint(checkpointed):
    student, work, state = checkpointed
    meta_path = state.parent / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["fingerprint"]["format"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AlembertError, match=r"different format \(checkpoint 1, now 2\)"):
        _fit(student, work, resume=True)
