"""data.labelled_examples: the teacher and the baseline learn from the first N labelled examples; distillation
reads every training example through soft targets only."""

from __future__ import annotations

from dataclasses import replace

import pytest

from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from alembert.training import TrainConfig
from distill.augment import AugmentConfig
from distill.models import StudentConfig
from distill.recipes import RecipeConfig, StageConfig, TermConfig
from pipeline.run import FinetuneConfig, RunConfig, _finetune_key, setup

DATA = DataConfig(demo=DemoConfig(train_size=120, dev_size=40, test_size=40), max_length=16, labelled_examples=30)
SOFT_ONLY = RecipeConfig(stages=(StageConfig(terms=(TermConfig("hard", 0.0), TermConfig("kd", 1.0, {"temperature": 2.0}))),))


def config(teacher, cache, **changes) -> RunConfig:
    base = dict(teacher=str(teacher), data=DATA, recipe=SOFT_ONLY, student=StudentConfig(num_layers=1),
                train=TrainConfig(epochs=1, batch_size=8, lr=1e-3),
                finetune=FinetuneConfig(mode="always", cache_dir=str(cache), train=TrainConfig(epochs=1, batch_size=8)),
                baseline=False, latency_seq_len=8)
    return RunConfig(**(base | changes))


def test_teacher_and_baseline_see_the_labelled_subset_and_distillation_sees_everything(tiny_dir, tmp_path):
    run = setup(config(tiny_dir("bert", 2), tmp_path))
    assert len(run.loaders.train.dataset) == 30
    assert len(run.loaders.transfer.dataset) == 120
    labelled = {tuple(row["input_ids"]) for row in run.loaders.train.dataset}
    everything = [tuple(row["input_ids"]) for row in run.loaders.transfer.dataset]
    assert labelled == set(everything[:30])  # the first N, in the file's order


def test_the_teacher_cache_key_depends_on_the_labelled_examples_only(tiny_dir, tmp_path):
    teacher = tiny_dir("bert", 2)
    key = _finetune_key(setup(config(teacher, tmp_path)), config(teacher, tmp_path))
    more = config(teacher, tmp_path, data=replace(DATA, labelled_examples=40))
    assert _finetune_key(setup(more), more) != key
    longer_tail = config(teacher, tmp_path, data=replace(DATA, demo=replace(DATA.demo, train_size=150)))
    # more unlabelled examples after the same 30 labelled ones: the same fine-tuned teacher
    assert _finetune_key(setup(longer_tail), longer_tail) == key


@pytest.mark.parametrize("recipe", [
    RunConfig().recipe,  # kd with alpha 0.5: the hard term reads labels
    RecipeConfig(stages=(StageConfig(terms=(TermConfig("hard", 0.0, schedules={"weight": {"kind": "linear", "start": 0.0, "end": 1.0}}),
                                            TermConfig("kd", 1.0))),)),
])
def test_a_recipe_that_reads_labels_is_refused_in_one_line(tiny_dir, tmp_path, recipe):
    with pytest.raises(AlembertError, match="weights the hard term, which reads labels"):
        setup(config(tiny_dir("bert", 2), tmp_path, recipe=recipe))


def test_no_unlabelled_example_left_is_refused(tiny_dir, tmp_path):
    with pytest.raises(AlembertError, match="leaves no unlabelled training example"):
        setup(config(tiny_dir("bert", 2), tmp_path, data=replace(DATA, labelled_examples=120)))


def test_augmentation_beside_it_is_refused(tiny_dir, tmp_path):
    with pytest.raises(AlembertError, match="not supported"):
        setup(config(tiny_dir("bert", 2), tmp_path, augment=AugmentConfig(enabled=True)))
