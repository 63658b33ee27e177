"""The engine's options on tiny models: evaluation every N steps, early stopping, NaN with the last checkpoint,
TensorBoard events, and the one-line errors for options that cannot work."""

from __future__ import annotations

import pytest

from alembert.tasks import task_named
from alembert.training import TrainConfig
from distill.engine import fit
from alembert.errors import AlembertError
from distill.losses import LOSSES, LossSpec, Objective, Term

HARD = Objective((Term("hard", 1.0),))


@pytest.fixture
def tiny(tiny_dir):
    """A 1-layer model and loaders over 24 demo examples: 6 batches of 4 per epoch."""
    from alembert.data import DataConfig, encode, load_task, loader
    from alembert.demo import DemoConfig
    from alembert.modeldir import load_classifier, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_dir("bert", 1)))
    task = load_task(DataConfig(demo=DemoConfig(train_size=24, dev_size=8, test_size=8), max_length=16))
    train = loader(encode(task, "train", tokenizer, DataConfig(max_length=16)), tokenizer, batch_size=4, task=task_named("classification"), shuffle=True)
    dev = loader(encode(task, "dev", tokenizer, DataConfig(max_length=16)), tokenizer, batch_size=8, task=task_named("classification"))
    return load_classifier(str(tiny_dir("bert", 1)))[0], train, dev


def test_eval_every_n_steps_records_each_evaluation_and_the_last_step(tiny):
    model, train, dev = tiny
    history = fit(model, train, dev, HARD, TrainConfig(epochs=2, batch_size=4, eval_every=5))
    assert [(r["epoch"], r["step"]) for r in history.epochs] == [(1, 5), (2, 10), (2, 12)]
    assert all("accuracy" in r and "loss" in r for r in history.epochs)
    assert history.best_step in (5, 10, 12)


def test_training_without_attention_dropout_zeroes_it_and_keeps_the_rest(tiny):
    model, train, dev = tiny
    before = model.config.hidden_dropout_prob
    assert model.config.attention_probs_dropout_prob > 0
    fit(model, train, None, HARD, TrainConfig(epochs=1, batch_size=4, attention_dropout=False))
    attention = [m for name, m in model.named_modules() if name.endswith("attention.self")]
    assert attention and all(m.dropout.p == 0.0 for m in attention)  # SDPA then takes its fused kernel
    assert model.config.attention_probs_dropout_prob == 0.0 and model.config.hidden_dropout_prob == before


def test_patience_counts_evaluations(tiny):
    model, train, dev = tiny
    # lr=0: the dev metric never improves after the first evaluation, so patience 2 stops after the third
    history = fit(model, train, dev, HARD, TrainConfig(epochs=3, batch_size=4, lr=0.0, eval_every=2, patience=2))
    assert [r["step"] for r in history.epochs] == [2, 4, 6] and history.best_step == 2


def test_a_nan_loss_names_the_last_good_checkpoint(tiny, tmp_path):
    model, train, _ = tiny
    calls = []

    def nan_after_eight_batches(student, teacher, *, mask):
        calls.append(1)
        return student.logits.sum() * (float("nan") if len(calls) > 8 else 0.0)

    LOSSES.add("nan_later", LossSpec(nan_after_eight_batches, needs_teacher=False))
    try:
        with pytest.raises(AlembertError, match=r"at step 8 \(epoch 2\) in term 'nan_later'.*the last good checkpoint is "
                                                 r".*step-00000006") as err:
            fit(model, train, None, Objective((Term("nan_later", 1.0),)), TrainConfig(epochs=2, batch_size=4, checkpoint_every=3),
                checkpoint_dir=tmp_path / "checkpoints")
        assert "\n" not in str(err.value)
    finally:
        LOSSES.remove("nan_later")


def test_tensorboard_writes_event_files(tiny, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, train, dev = tiny
    fit(model, train, dev, HARD, TrainConfig(epochs=1, batch_size=4, tensorboard=True), log_dir=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/lr", "train/step_loss", "train/loss", "dev/accuracy"} <= set(tags)
    assert [e.step for e in events.Scalars("train/step_loss")] == list(range(1, 7))


@pytest.mark.parametrize("changes, kwargs, message", [
    (dict(precision="fp16"), {}, "fp16 needs a CUDA GPU"),
    (dict(checkpoint_every=2), {}, "has no checkpoint directory"),
    (dict(tensorboard=True), {}, "has no log directory"),
    (dict(eval_every=0), {}, r"train.eval_every=0 is not valid"),
])
def test_options_that_cannot_work_fail_in_one_line(tiny, changes, kwargs, message):
    import torch

    if changes.get("precision") == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is valid with CUDA")
    model, train, dev = tiny
    with pytest.raises(AlembertError, match=message):
        fit(model, train, dev, HARD, TrainConfig(epochs=1, batch_size=4, **changes), **kwargs)
