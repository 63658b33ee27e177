"""End to end on tiny models: the run, its outputs, and the CLI's one-line errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dataclasses import replace

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.training import TrainConfig
from alembert.evaluate import predict_logits
from alembert.training import KDConfig
from alembert.tasks import task_named
from distill.models import StudentConfig
from pipeline.run import FinetuneConfig, RunConfig, distil, prepare_teacher, run, setup

ROOT = Path(__file__).resolve().parents[1]
SMALL_DEMO = DataConfig(demo=DemoConfig(train_size=400, dev_size=80, test_size=80), max_length=32)


def _config(teacher: Path, cache: Path, **changes) -> RunConfig:
    base = dict(teacher=str(teacher), data=SMALL_DEMO, student=StudentConfig(num_layers=2),
                kd=KDConfig(temperature=2.0, alpha=0.0),
                train=TrainConfig(epochs=3, batch_size=16, lr=1e-3),
                finetune=FinetuneConfig(mode="always", cache_dir=str(cache), train=TrainConfig(epochs=3, batch_size=16, lr=1e-3)),
                baseline=False, latency_seq_len=16)
    base.update(changes)
    return RunConfig(**base)


@pytest.fixture
def confident_teacher(tiny_dir, tmp_path):
    """A tiny random teacher whose head is scaled up, so its predictions are confident and varied."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_dir("bert"))
    with torch.no_grad():
        model.classifier.weight.mul_(300.0)
    model.save_pretrained(tmp_path / "teacher")
    AutoTokenizer.from_pretrained(tiny_dir("bert")).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def test_short_distillation_lowers_the_kl_to_the_teacher(confident_teacher, tmp_path):
    config = _config(confident_teacher, tmp_path / "cache", finetune=FinetuneConfig(mode="never"),
                     student=StudentConfig(num_layers=2, init="random"))
    prepared = setup(config)
    teacher, _ = prepare_teacher(prepared, config)
    teacher_logits, _ = predict_logits(teacher, prepared.loaders.eval)
    untrained, _ = distil(prepared, teacher, replace(config, train=TrainConfig(epochs=0)), use_teacher=True)
    before = task_named("classification").agreement(predict_logits(untrained, prepared.loaders.eval)[0], teacher_logits)["kl_to_teacher"]
    student, _ = distil(prepared, teacher, config, use_teacher=True)
    after = task_named("classification").agreement(predict_logits(student, prepared.loaders.eval)[0], teacher_logits)["kl_to_teacher"]
    assert before > 0.05
    assert after < 0.7 * before


def test_run_writes_a_loadable_student_and_a_summary_and_reuses_the_teacher(tiny_dir, tmp_path):
    config = _config(tiny_dir("bert"), tmp_path / "cache", baseline=True, train=TrainConfig(epochs=1, batch_size=32))
    rows = run(config, tmp_path / "out")
    assert [row["model"] for row in rows] == ["teacher", "student (KD)", "student (no KD)"]
    assert rows[1]["layers"] == 2 and rows[1]["params"] < rows[0]["params"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(rows))
    assert (tmp_path / "out" / "summary.md").read_text().startswith("| model |")
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "student")
    assert student.config.id2label == {0: "negative", 1: "positive"}
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1
    stamp = (cached[0] / "model.safetensors").stat().st_mtime_ns
    run(config, tmp_path / "again")  # the fine-tuned teacher comes from the cache, untouched
    assert (cached[0] / "model.safetensors").stat().st_mtime_ns == stamp


def _cli(*overrides, cwd):
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distill", *overrides, f"hydra.run.dir={cwd}/run"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nthe movie was good\tpos\nthe plot was bad\tneg\n")
    return path


@pytest.mark.parametrize("make_overrides, message", [
    (lambda d, t, p: ["teacher=/no/such/model"], "model path /no/such/model does not exist"),
    (lambda d, t, p: [f"teacher={t}", "data.task=files", f"data.train={p}", "data.text_column=review"], "has no column review"),
    (lambda d, t, p: [f"teacher={t}", "data.task=files", f"data.train={p}", f"data.dev={d}"], "label 'maybe' is not one of the training labels"),
    (lambda d, t, p: [f"teacher={t}", "data.task=files", f"data.train={d.parent / 'empty.tsv'}"], "has no rows"),
    (lambda d, t, p: ["student.no_such_key=1"], "no_such_key"),
    (lambda d, t, p: [f"teacher={t}", "student.teacher_layers=[0,9]", f"data.train={p}", "data.task=files",
                      "finetune.mode=never"], r"names layers \[9\]"),
])
def test_cli_bad_input_is_one_line_without_traceback_and_leaves_no_output(tiny_dir, tmp_path, train_file, make_overrides, message):
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\nfine\tmaybe\n")
    (tmp_path / "empty.tsv").write_text("sentence\tlabel\n")
    result = _cli(*make_overrides(dev, tiny_dir("bert"), train_file), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("alembert: error:")]
    assert len(ours) == 1 or "Could not override" in result.stderr  # Hydra reports unknown keys itself
    assert not (tmp_path / "run").exists()


def test_a_headless_teacher_gets_the_same_head_whatever_the_process_rng(tiny_dir, tmp_path):
    """torch's start-up seed differs per process: the new head must come from finetune.train.seed alone."""
    from transformers import BertModel

    BertModel.from_pretrained(tiny_dir("bert")).save_pretrained(tmp_path / "encoder")  # no classifier head
    AutoTokenizer.from_pretrained(tiny_dir("bert")).save_pretrained(tmp_path / "encoder")
    config = _config(tmp_path / "encoder", tmp_path / "cache", finetune=FinetuneConfig(mode="never"))
    prepared = setup(config)
    heads = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # what a different import history or start-up seed would leave behind
        heads.append(prepare_teacher(prepared, config)[0].classifier.weight.detach().clone())
    assert torch.equal(heads[0], heads[1])


def test_a_teacher_trained_for_other_labels_gets_a_fresh_head_and_says_so(tiny_dir, tmp_path, capsys):
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_dir("bert"), num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2},
        ignore_mismatched_sizes=True)
    model.save_pretrained(tmp_path / "three")
    AutoTokenizer.from_pretrained(tiny_dir("bert")).save_pretrained(tmp_path / "three")
    config = _config(tmp_path / "three", tmp_path / "cache", finetune=FinetuneConfig(
        mode="auto", cache_dir=str(tmp_path / "cache"), train=TrainConfig(epochs=1, batch_size=32)))
    prepared = setup(config)
    teacher, source = prepare_teacher(prepared, config)
    assert teacher.classifier.out_features == len(prepared.task.label_names) == 2 and source != str(tmp_path / "three")
    said = capsys.readouterr().out
    assert "its head was trained for 3 labels (a, b, c), this task has 2" in said and "a fresh 2-label head" in said
