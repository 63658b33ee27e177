"""The run's other modes on tiny models: several teachers, an augmented transfer set, and raw-text MLM distillation."""


import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from distill.augment import AugmentConfig
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.training import TrainConfig
from alembert.errors import AlembertError
from compress.cli import CompressStage
from distill.models import StudentConfig
from distill.multi_teacher import MultiTeacher
from distill.recipes import RecipeConfig, StageConfig, TermConfig
from pipeline.run import FinetuneConfig, RunConfig, build_teacher, prepare_teacher, run, setup
from tests.conftest import tiny_config

SMALL = DataConfig(demo=DemoConfig(train_size=48, dev_size=16, test_size=16), max_length=24)
KD_ONLY = RecipeConfig(stages=(StageConfig(terms=(TermConfig("kd", 1.0, {"temperature": 2.0}),)),))


@pytest.fixture
def mlm_dir(tiny_dir, tmp_path):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir("bert"))
    model = AutoModelForMaskedLM.from_config(tiny_config("bert", len(tokenizer)))
    model.save_pretrained(tmp_path / "mlm")
    tokenizer.save_pretrained(tmp_path / "mlm")
    return tmp_path / "mlm"


def _config(teacher, **changes) -> RunConfig:
    base = dict(teacher=str(teacher), data=SMALL, recipe=KD_ONLY, student=StudentConfig(num_layers=2),
                train=TrainConfig(epochs=1, batch_size=16), finetune=FinetuneConfig(mode="never"),
                baseline=False, latency_seq_len=8)
    return RunConfig(**{**base, **changes})


def test_two_teachers_give_a_weighted_multi_teacher(tiny_dir, tmp_path):
    other = tmp_path / "other"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_dir("bert", layers=2))
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_dir("bert")).save_pretrained(other)
    config = _config(tiny_dir("bert"), teachers=(str(other),), teacher_weights=(0.25, 0.75))
    prepared = setup(config)
    first, _ = prepare_teacher(prepared, config)
    teacher = build_teacher(prepared, first, config)
    assert isinstance(teacher, MultiTeacher)
    rows = run(config, tmp_path / "out")
    assert rows[1]["model"] == "student (KD)"


def test_augmented_transfer_set_is_larger_and_keeps_the_teacher_data(tiny_dir, mlm_dir):
    config = _config(tiny_dir("bert"), augment=AugmentConfig(enabled=True, mlm=str(mlm_dir), n_per_example=2))
    loaders = setup(config).loaders
    assert len(loaders.transfer.dataset) == 3 * len(loaders.train.dataset)


def test_tang_augmentation_enlarges_the_transfer_set_without_an_mlm_model(tiny_dir):
    config = _config(tiny_dir("bert"), augment=AugmentConfig(enabled=True, method="tang", n_per_example=2))
    loaders = setup(config).loaders
    assert len(loaders.train.dataset) < len(loaders.transfer.dataset) <= 3 * len(loaders.train.dataset)


def _corpus(tmp_path, lines=("the movie was good", "the plot felt very dull", "the cast was brilliant")) -> DataConfig:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(list(lines) * 8))
    return DataConfig(task="files", train=str(corpus), task_type="masked_lm", max_length=24)


MLM_TERMS = RecipeConfig(stages=(StageConfig(terms=(TermConfig("kd", 1.0, {"temperature": 2.0}), TermConfig("hard", 1.0))),))


def test_a_raw_text_corpus_file_runs_masked_lm_distillation(mlm_dir, tmp_path):
    rows = run(_config(mlm_dir, data=_corpus(tmp_path), recipe=MLM_TERMS), tmp_path / "out")
    assert [row["model"] for row in rows] == ["teacher", "student (KD)"] and 0 <= rows[1]["accuracy"] <= 1
    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "out" / "student").config.num_hidden_layers == 2


def test_a_teacher_without_an_mlm_head_is_fine_tuned_on_the_corpus_first(tiny_dir, tmp_path, capsys):
    config = _config(tiny_dir("bert"), data=_corpus(tmp_path), recipe=MLM_TERMS,
                     finetune=FinetuneConfig(mode="auto", train=TrainConfig(epochs=1, batch_size=16),
                                             cache_dir=str(tmp_path / "cache")))
    run(config, tmp_path / "out")
    assert "fine-tuning the teacher first (the teacher has no masked_lm head" in capsys.readouterr().out
    [cached] = (tmp_path / "cache").iterdir()
    assert AutoModelForMaskedLM.from_pretrained(cached).config.problem_type == "masked_lm"


def test_several_mlm_teachers_mix_their_soft_targets(mlm_dir, tmp_path):
    rows = run(_config(mlm_dir, data=_corpus(tmp_path), recipe=MLM_TERMS, teachers=(str(mlm_dir),)), tmp_path / "out")
    assert rows[1]["model"] == "student (KD)"


@pytest.mark.parametrize(("changes", "named"), [
    (lambda tmp: {"augment": AugmentConfig(enabled=True, mlm=str(tmp))}, "augment.enabled=true does not work for the masked_lm task"),
    (lambda tmp: {"student": StudentConfig(num_layers=2, kind="static")}, "student.kind=static classifies whole texts"),
    (lambda tmp: {"compress": CompressStage(passes=("prune_ffn",))}, "compress.passes does not take a masked_lm model"),
])
def test_masked_lm_runs_name_the_settings_they_cannot_take(changes, named, mlm_dir, tmp_path):
    config = _config(mlm_dir, data=_corpus(tmp_path), recipe=MLM_TERMS, **changes(tmp_path))
    with pytest.raises(AlembertError, match=named):
        run(config, tmp_path / "out")
    assert not (tmp_path / "out" / "student").exists()


def test_compression_passes_run_after_distillation(tiny_dir, tmp_path):
    config = _config(tiny_dir("bert"), compress=CompressStage(passes=("prune_ffn",), settings={"prune_ffn": {"ratio": 0.5}}))
    run(config, tmp_path / "out")
    compressed = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "compressed" / "model")
    assert compressed.config.intermediate_size == 32  # half of the tiny model's 64
    assert (tmp_path / "out" / "compressed" / "compress_report.md").is_file()
