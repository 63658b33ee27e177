"""python -m distill data=ner end to end on a tiny teacher: every recipe trains a token-classification student."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from alembert.data import DataConfig, encode, load_task, loader
from alembert.demo import DemoConfig
from alembert.evaluate import predict_logits
from alembert.modeldir import load_model_dir
from alembert.tasks import task_named

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["data.demo.train_size=96", "data.demo.dev_size=24", "data.demo.test_size=24", "data.max_length=32"]


def distill_cli(tmp_path: Path, teacher: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "distill", f"teacher={teacher}", "data=ner", *SIZES, "train.epochs=1",
               "train.batch_size=16", "finetune.train.epochs=1", f"finetune.cache_dir={tmp_path / 'cache'}",
               "latency_seq_len=8", f"hydra.run.dir={tmp_path / 'out'}", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("recipe", ["kd", "distilbert", "tinybert", "minilm", "pkd", "theseus", "kd train.layerdrop=0.3"])
def test_every_recipe_distils_a_token_classifier(tiny_dir, tmp_path, recipe):
    name, *more = recipe.split()
    done = distill_cli(tmp_path, tiny_dir("bert"), f"recipe={name}", "baseline=false", *more)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["model"] for row in rows] == ["teacher", "student (KD)"]
    assert all(0.0 <= row["f1"] <= 1.0 and "f1_PER" in row for row in rows)
    student = AutoModelForTokenClassification.from_pretrained(tmp_path / "out" / "student")
    assert student.config.num_hidden_layers == 2 and student.config.id2label[0] == "O"


def test_a_saved_token_student_gives_the_same_token_predictions_after_reloading(tiny_dir, tmp_path):
    done = distill_cli(tmp_path, tiny_dir("bert"), "baseline=false")
    assert done.returncode == 0, done.stderr[-2000:]
    directory = tmp_path / "out" / "student"
    config = DataConfig(task_type="token_classification", demo=DemoConfig(train_size=96, dev_size=24, test_size=24),  # the run's splits
                        max_length=32)
    model = load_model_dir(directory)
    data = load_task(config, label_names=tuple(model.config.id2label[i] for i in range(model.config.num_labels)))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    rows = loader(encode(data, "test", tokenizer, config), tokenizer, batch_size=5, task=task_named("token_classification"))
    ours, labels = predict_logits(model, rows)
    plain, _ = predict_logits(AutoModelForTokenClassification.from_pretrained(directory), rows)
    assert ours.shape[:2] == labels.shape and ours.shape[-1] == model.config.num_labels
    assert torch.equal(ours.argmax(-1), plain.argmax(-1)) and torch.allclose(ours, plain, atol=1e-5)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    metrics = task_named("token_classification").metrics(ours, labels, data.label_names)
    assert metrics["f1"] == pytest.approx(summary[1]["f1"], abs=1e-6)  # the summary's F1 is this model's, on test
