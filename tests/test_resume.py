"""Checkpoint and resume: a run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted one does.

The training runs in subprocesses (this file's __main__) so that the kill is a real SIGKILL: no cleanup,
no flushing, nothing but what the checkpoint wrote atomically before it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
STEPS_PER_EPOCH, EPOCHS, CHECKPOINT_EVERY, KILL_AT = 6, 2, 4, 10  # the kill lands mid-epoch 2, after checkpoint 8


def _train(teacher_dir: str, student_dir: str, work: str, kill_at: int = 0, resume: bool = False, **changes) -> dict:
    """Distil a tiny student for EPOCHS epochs with dropout on, checkpointing; SIGKILL itself after step `kill_at`."""
    from torch import nn

    from distill import engine
    from alembert.data import DataConfig, encode, load_task, loader
    from alembert.tasks import task_named
    from alembert.demo import DemoConfig
    from distill.losses import Objective, Term
    from distill.models import Teacher
    from alembert.modeldir import load_classifier, load_tokenizer

    if kill_at:
        original = engine._optimizer_step

        def step_then_maybe_die(run, state):
            original(run, state)
            if state.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        engine._optimizer_step = step_then_maybe_die
    tokenizer = load_tokenizer(teacher_dir)
    task = load_task(DataConfig(demo=DemoConfig(train_size=6 * STEPS_PER_EPOCH, dev_size=16, test_size=8), max_length=24))
    train = loader(encode(task, "train", tokenizer, DataConfig(max_length=24)), tokenizer, batch_size=6, task=task_named("classification"), shuffle=True, seed=3)
    dev = loader(encode(task, "dev", tokenizer, DataConfig(max_length=24)), tokenizer, batch_size=16, task=task_named("classification"))
    teacher, _ = load_classifier(teacher_dir)
    student, _ = load_classifier(student_dir)  # dropout 0.1 stays on: the resumed run must replay its RNG
    torch.manual_seed(int(resume))  # a resumed projection starts different and must be restored from the checkpoint
    projection = nn.Linear(32, 32)  # stands for a TinyBERT projection: saved and restored with the student
    objective = Objective((Term("hard", 0.5), Term("kd", 0.5, {"temperature": 2.0})))
    config = engine.TrainConfig(**{**dict(epochs=EPOCHS, batch_size=6, lr=3e-3, eval_every=3, checkpoint_every=CHECKPOINT_EVERY,
                                          resume=resume, seed=7), **changes})
    history = engine.fit(student, train, dev, objective, config, teacher=Teacher(teacher), extra_modules=(projection,),
                         checkpoint_dir=Path(work) / "checkpoints", desc="kd")
    logits, _ = engine.predict_logits(student, dev)
    return {"logits": logits, "history": history.epochs, "best_step": history.best_step,
            "projection": projection.weight.detach().clone()}


@pytest.mark.parametrize("layerdrop", [None, 0.5])  # LayerDrop's draws come from (seed, step): a resume replays them
def test_a_run_killed_mid_epoch_and_resumed_ends_like_an_uninterrupted_one(tiny_dir, tmp_path, capsys, layerdrop):
    teacher, student = str(tiny_dir("bert", 2)), str(tiny_dir("bert", 1))
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, str(HERE), teacher, student, str(tmp_path / "killed"), str(KILL_AT), str(layerdrop)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step-00000008"
    meta = json.loads((checkpoints / "step-00000008" / "meta.json").read_text())
    assert (meta["epoch"], meta["batch"]) == (1, 2)  # mid-epoch 2: the resume must skip two batches
    expected = _train(teacher, student, str(tmp_path / "straight"), layerdrop=layerdrop)
    got = _train(teacher, student, str(tmp_path / "killed"), resume=True, layerdrop=layerdrop)
    assert "resuming at step 8" in capsys.readouterr().out
    assert torch.allclose(got["logits"], expected["logits"], atol=1e-6), (got["logits"] - expected["logits"]).abs().max()
    assert got["history"] == expected["history"] and got["best_step"] == expected["best_step"]
    assert torch.equal(got["projection"], expected["projection"])
    assert [p.name for p in checkpoints.iterdir() if p.is_dir()] == ["final"]


def test_a_resume_with_an_incompatible_checkpoint_fails_in_one_line(tiny_dir, tmp_path):
    from alembert.errors import AlembertError

    teacher, student = str(tiny_dir("bert", 2)), str(tiny_dir("bert", 1))
    _train(teacher, student, str(tmp_path), epochs=1)
    with pytest.raises(AlembertError, match=r"cannot resume from .*final: .*different settings \(lr: checkpoint 0.003, now 0.001\)"
                       r"; resume with the settings it was written with, or delete .* to start afresh") as err:
        _train(teacher, student, str(tmp_path), epochs=1, resume=True, lr=1e-3)
    assert "\n" not in str(err.value)
    with pytest.raises(AlembertError, match=r"different parameters \(0.bert.encoder.layer.1.attention"):
        _train(teacher, teacher, str(tmp_path), epochs=1, resume=True)  # a 2-layer student against a 1-layer checkpoint


if __name__ == "__main__":
    torch.set_num_threads(2)  # as conftest does for the in-process runs it is compared with
    _train(sys.argv[1], sys.argv[2], sys.argv[3], kill_at=int(sys.argv[4]),
           layerdrop=None if sys.argv[5] == "None" else float(sys.argv[5]))
