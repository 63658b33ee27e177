"""Faults through the command lines: a real `python -m distill | export | compress` killed with SIGKILL.

SIGKILL runs no cleanup and flushes nothing, so what is left is only what was written atomically before it.
Training runs are killed once their first checkpoint is on disk and resumed with train.resume=true; they must
end exactly like an uninterrupted run. Writers are killed the moment their temporary directory appears (a
random instant would be flaky); no output may then look complete, and a rerun must succeed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import save_tiny_mlm
from alembert.demo import DemoConfig, generate

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
TIMINGS = ("train_s", "latency_ms")  # wall-clock columns: the only ones a resumed run may differ in
CHECKPOINT_EVERY = 3  # 40 steps an epoch: the first checkpoint, and so the kill, lands mid-epoch 1
RUN_TIMEOUT_S = 300  # a safety net against a hung child, not a timing assertion
# Fine-tuning on, with a learning rate that moves the tiny models, so the metrics depend on every step.
DISTILL_ARGS = ("data.task=demo", "data.demo.train_size=320", "data.demo.dev_size=32", "data.demo.test_size=64",
                "data.max_length=32", "student.num_layers=1", "baseline=false", "finetune.mode=always",
                "finetune.train.epochs=2", "finetune.train.batch_size=8", "finetune.train.lr=3e-3", "train.epochs=2",
                "train.batch_size=8", "train.lr=3e-3", "latency_seq_len=8")


def start(work: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """Start `python <args>`; its output goes to a file, so a full pipe can never stall it."""
    work.mkdir(parents=True, exist_ok=True)
    log = work.parent / f"{work.name}.log"
    with log.open("a") as out:
        process = subprocess.Popen([sys.executable, *args], cwd=work.parent, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    return process, log


def finish(work: Path, *args: str) -> str:
    """Run `python <args>` to the end; return its output, failing with it when the exit code is not 0."""
    process, log = start(work, *args)
    code = process.wait(timeout=RUN_TIMEOUT_S)
    assert code == 0, log.read_text()[-3000:]
    return log.read_text()


def kill_when(process: subprocess.Popen, log: Path, ready: Callable[[], bool]) -> None:
    """SIGKILL `process` as soon as `ready()` holds; fail if it ends (or hangs) before that."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended with {process.returncode} before the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the kill point never came")
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, f"the run finished before the kill landed:\n{log.read_text()[-3000:]}"


def metrics(summary: Path) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in TIMINGS} for row in json.loads(summary.read_text())]


def same_weights(first: Path, second: Path) -> bool:
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def latest_meta(checkpoints: Path) -> dict:
    return json.loads((checkpoints / (checkpoints / "latest").read_text() / "meta.json").read_text())


def distill_args(teacher: Path, work: Path, cache: Path, *extra: str) -> tuple[str, ...]:
    return ("-m", "distill", f"teacher={teacher}", *DISTILL_ARGS, f"finetune.cache_dir={cache}", f"hydra.run.dir={work}", *extra)


@pytest.fixture(scope="module")
def straight(tiny_dir, tmp_path_factory) -> dict:
    """One uninterrupted run (teacher fine-tune, then the student), without checkpoints: what resumed runs must match."""
    root = tmp_path_factory.mktemp("straight")
    teacher, work, cache = tiny_dir("bert", 2), root / "run", root / "cache"
    finish(work, *distill_args(teacher, work, cache))
    return {"teacher": teacher, "work": work, "cache": cache, "summary": metrics(work / "summary.json")}


def test_a_distill_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(straight, tmp_path):
    work = tmp_path / "run"
    args = distill_args(straight["teacher"], work, straight["cache"], f"train.checkpoint_every={CHECKPOINT_EVERY}")
    process, log = start(work, *args)  # the cached teacher is reused: the first checkpoint is the student's
    kill_when(process, log, lambda: any((work / "checkpoints").glob("*/latest")))
    meta = latest_meta(work / "checkpoints" / "student-stage1")
    assert not meta["finished"] and 0 < meta["batch"] < 40  # killed mid-epoch, after a mid-epoch checkpoint
    assert not (work / "student").exists() and not (work / "summary.json").exists()
    output = finish(work, *args, "train.resume=true")
    assert f"resuming at step {meta['step']}" in output
    assert metrics(work / "summary.json") == straight["summary"]
    assert same_weights(work / "student", straight["work"] / "student")


def test_a_teacher_fine_tune_killed_mid_epoch_resumes_to_the_uninterrupted_result(straight, tmp_path):
    work, cache = tmp_path / "run", tmp_path / "cache"  # an empty cache: the teacher is fine-tuned again
    args = distill_args(straight["teacher"], work, cache, f"train.checkpoint_every={CHECKPOINT_EVERY}")
    process, log = start(work, *args)
    checkpoints = work / "checkpoints" / "teacher-finetune"
    kill_when(process, log, lambda: (checkpoints / "latest").is_file())
    meta = latest_meta(checkpoints)
    assert not meta["finished"] and 0 < meta["batch"] < 40
    assert not any(cache.glob("*/config.json"))  # a killed fine-tune caches no teacher
    output = finish(work, *args, "train.resume=true")
    assert f"fine-tune teacher: resuming at step {meta['step']}" in output
    assert metrics(work / "summary.json") == straight["summary"]
    [cached], [expected] = cache.iterdir(), straight["cache"].iterdir()
    assert cached.name == expected.name and same_weights(cached, expected)
    assert same_weights(work / "student", straight["work"] / "student")


@pytest.fixture
def mlm_teacher(tmp_path) -> Path:
    """A 2-layer BERT with an MLM head (dropout on, so the resume must restore the RNG), saved with its tokenizer."""
    return save_tiny_mlm(tmp_path / "mlm-teacher", layers=2)


def test_a_masked_lm_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(mlm_teacher, tmp_path):
    corpus = tmp_path / "corpus.txt"
    rows = generate(DemoConfig(train_size=160, dev_size=1, test_size=1))["train"]
    corpus.write_text("\n".join(row["sentence"] for row in rows))  # 40 batches of 4 an epoch

    def args(work: Path, *extra: str) -> tuple[str, ...]:
        return ("-m", "distill", f"teacher={mlm_teacher}", "data=corpus", "data.task=files", f"data.train={corpus}",
                "data.max_length=32", "recipe=distilbert_mlm", "student.num_layers=1", "train.epochs=2",
                "train.batch_size=4", "train.lr=3e-3", "baseline=false", "latency_seq_len=8", f"hydra.run.dir={work}", *extra)

    finish(tmp_path / "straight", *args(tmp_path / "straight"))
    work = tmp_path / "run"
    checkpoints = work / "checkpoints" / "student-stage1"
    process, log = start(work, *args(work, f"train.checkpoint_every={CHECKPOINT_EVERY}"))
    kill_when(process, log, lambda: (checkpoints / "latest").is_file())
    meta = latest_meta(checkpoints)
    assert not meta["finished"] and 0 < meta["batch"] < 40
    output = finish(work, *args(work, f"train.checkpoint_every={CHECKPOINT_EVERY}", "train.resume=true"))
    assert f"mlm distil: resuming at step {meta['step']}" in output
    straight = metrics(tmp_path / "straight" / "summary.json")
    assert metrics(work / "summary.json") == straight and {"accuracy", "perplexity", "agreement"} <= set(straight[1])
    assert same_weights(work / "student", tmp_path / "straight" / "student")


def test_an_export_killed_while_writing_leaves_no_bundle_and_a_rerun_succeeds(tiny_dir, tmp_path):
    bundle = tmp_path / "bundle"
    args = ("-m", "export", f"model={tiny_dir('bert', 2)}", f"out={bundle}", "variants=[optimized]",
            "parity.samples=4", "parity.batch_sizes=[1,2]", "parity.max_lengths=[8,16]", "latency.runs=2", "latency.warmup=1")
    process, log = start(tmp_path / "first", *args)
    kill_when(process, log, lambda: any(tmp_path.glob(".bundle.tmp-*")))
    assert not bundle.exists()  # the bundle appears whole, by one rename, or not at all
    finish(tmp_path / "again", *args)  # the killed writer's temporary directory is removed, not reused
    assert not any(tmp_path.glob(".bundle.tmp-*"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["variants"]) == {"fp32", "optimized"}
    assert all((bundle / entry["file"]).is_file() for entry in manifest["variants"].values())


def test_a_compress_killed_while_writing_leaves_no_model_and_a_rerun_succeeds(tiny_dir, tmp_path):
    from compress.saving import load_compressed

    work = tmp_path / "run"
    args = ("-m", "compress", f"model={tiny_dir('bert', 2)}", "passes=[prune_ffn]", "data.task=demo", "data.demo.train_size=32",
            "data.demo.dev_size=32", "data.demo.test_size=8", "data.max_length=32", f"hydra.run.dir={work}")
    process, log = start(work, *args)
    kill_when(process, log, lambda: any(work.glob(".model.tmp-*")))
    assert not (work / "model").exists() and not (work / "compress_report.json").exists()
    finish(work, *args)  # same run directory: the killed writer's temporary directory is removed
    assert not any(work.glob(".model.tmp-*"))
    assert {"config.json", "model.safetensors"} <= {p.name for p in (work / "model").iterdir()}
    assert json.loads((work / "compress_report.json").read_text())[-1]["step"] == "prune_ffn"
    assert load_compressed(work / "model").config.intermediate_size < 64
