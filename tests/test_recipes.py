"""Recipes from alembert/conf/ compose into typed configs, schedules move as declared, and every recipe trains."""

from dataclasses import replace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from alembert.conf import CONF_DIR
from alembert.resolvers import register_resolvers
from alembert.config import from_dict
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.training import TrainConfig
from alembert.errors import AlembertError
from distill.losses import Term
from distill.models import StudentConfig
from distill.recipes import Schedule, StageConfig, TermConfig, stage_objective
from pipeline.run import FinetuneConfig, RunConfig, distil, prepare_teacher, setup

CONF = CONF_DIR
register_resolvers(OmegaConf.register_new_resolver)  # one_minus and kd_params, which the recipe files use
RECIPES = ("kd", "distilbert", "tinybert", "minilm", "pkd", "theseus")


def _compose(*overrides) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))


def test_kd_recipe_reads_alpha_and_temperature_from_the_kd_section():
    config = _compose("kd.alpha=0.2", "kd.temperature=3")
    hard, soft = config.recipe.stages[0].terms
    assert (hard.name, hard.weight) == ("hard", 0.2)
    assert soft.name == "kd" and soft.weight == pytest.approx(0.8)
    assert soft.params == {"temperature": 3.0, "scale_by_t2": True}
    mse = _compose("kd.soft_loss=logit_mse").recipe.stages[0].terms[1]
    assert mse.name == "logit_mse" and mse.params == {}


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_shipped_recipe_composes(recipe):
    config = _compose(f"recipe={recipe}")
    assert config.recipe.name == recipe and config.recipe.stages


def test_schedules_anneal_the_teacher_weight_and_move_the_temperature():
    term = Term("kd", 1.0, (("temperature", 4.0),),
                (("weight", Schedule("linear", 1.0, 0.0)), ("temperature", Schedule("cosine", 4.0, 1.0))))
    assert term.resolved(0.0) == (1.0, {"temperature": 4.0})
    weight, params = term.resolved(0.5)
    assert weight == pytest.approx(0.5) and params["temperature"] == pytest.approx(2.5)
    assert term.resolved(1.0) == (0.0, {"temperature": pytest.approx(1.0)})
    with pytest.raises(AlembertError, match="schedule kind 'step'"):
        Schedule("step")


def test_unknown_or_empty_stages_are_refused(tiny_dir):
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(tiny_dir("bert"))
    with pytest.raises(AlembertError, match="unknown loss term"):
        stage_objective(StageConfig(terms=(TermConfig("nope"),)), config, config)
    with pytest.raises(AlembertError, match="has no loss terms"):
        stage_objective(StageConfig(), config, config)


@pytest.mark.parametrize("recipe, student", [
    ("distilbert", StudentConfig(num_layers=2)),
    ("tinybert", StudentConfig(num_layers=2, init="random", hidden_size=16, num_heads=4, intermediate_size=32)),
    ("minilm", StudentConfig(num_layers=2, init="random", hidden_size=16, num_heads=4, intermediate_size=32)),
    ("pkd", StudentConfig(num_layers=3)),
    ("theseus", StudentConfig(num_layers=2)),
])
def test_recipes_train_a_student_end_to_end(tiny_dir, tmp_path, recipe, student):
    composed = _compose(f"recipe={recipe}", "train.epochs=1")
    config = replace(composed, teacher=str(tiny_dir("bert")), student=student,
                     data=DataConfig(demo=DemoConfig(train_size=64, dev_size=16, test_size=16), max_length=24),
                     train=TrainConfig(epochs=1, batch_size=16), finetune=FinetuneConfig(mode="never"))
    prepared = setup(config)
    teacher, _ = prepare_teacher(prepared, config)
    trained, _ = distil(prepared, teacher, config, use_teacher=True)
    assert trained.config.hidden_size == (student.hidden_size or 32)
    assert not any("maps" in name for name, _ in trained.named_parameters())  # the projection is not part of the student
    if recipe in ("tinybert", "minilm"):
        assert trained.config.attention_probs_dropout_prob == 0.0
    assert torch.isfinite(trained(input_ids=torch.tensor([[2, 10, 3]])).logits).all()


@pytest.mark.parametrize("recipe", ["pkd", "theseus"])
def test_classic_recipes_train_a_regression_student(tiny_dir, tmp_path, recipe):
    import json
    import random

    from alembert.demo import vocabulary

    rng = random.Random(0)
    for split, size in (("train", 48), ("dev", 16)):
        lines = [" ".join(rng.choices(vocabulary(), k=rng.randint(2, 8))) for _ in range(size)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"sentence": text, "label": len(text) / 40}) + "\n"
                                                         for text in lines))
    data = DataConfig(task="files", train=str(tmp_path / "train.jsonl"), dev=str(tmp_path / "dev.jsonl"),
                      task_type="regression", max_length=24)
    config = replace(_compose(f"recipe={recipe}"), teacher=str(tiny_dir("bert")), student=StudentConfig(num_layers=2),
                     data=data, train=TrainConfig(epochs=1, batch_size=16), finetune=FinetuneConfig(mode="never"))
    prepared = setup(config)
    teacher, _ = prepare_teacher(prepared, config)
    trained, _ = distil(prepared, teacher, config, use_teacher=True)
    assert trained.config.num_labels == 1 and trained.config.num_hidden_layers == 2
    assert type(trained.bert.encoder.layer) is torch.nn.ModuleList
    assert torch.isfinite(trained(input_ids=torch.tensor([[2, 10, 3]])).logits).all()
