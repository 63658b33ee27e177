"""The run's other modes on tiny models: several teachers, an augmented transfer set, and raw-text MLM distillation."""


import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from distill.augment import AugmentConfig
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.training import TrainConfig
from alembert.errors import AlembertError
from distill.mlm import CorpusConfig
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


def test_raw_text_corpus_runs_masked_lm_distillation(mlm_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the movie was good", "the plot felt very dull", "the cast was brilliant"] * 8))
    config = _config(mlm_dir, corpus=CorpusConfig(path=str(corpus)),
                     recipe=RecipeConfig(stages=(StageConfig(terms=(TermConfig("mlm_kd", 1.0), TermConfig("mlm", 1.0))),)))
    history = run(config, tmp_path / "out")
    assert history and AutoModelForMaskedLM.from_pretrained(tmp_path / "out" / "student").config.num_hidden_layers == 2


def test_masked_lm_distillation_refuses_a_teacher_without_an_mlm_head(tiny_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the movie was good\n")
    config = _config(tiny_dir("bert"), corpus=CorpusConfig(path=str(corpus)),
                     recipe=RecipeConfig(stages=(StageConfig(terms=(TermConfig("mlm", 1.0),)),)))
    with pytest.raises(AlembertError, match="masked-LM head|MLM head"):
        run(config, tmp_path / "out")


@pytest.mark.parametrize(("changes", "named"), [
    (lambda tmp: {"teachers": (str(tmp / "other"),)}, "teachers"),
    (lambda tmp: {"augment": AugmentConfig(enabled=True, mlm=str(tmp))}, "augment.enabled"),
    (lambda tmp: {"student": StudentConfig(num_layers=2, kind="static")}, "student.kind"),
])
def test_masked_lm_distillation_names_the_settings_it_does_not_take_instead_of_ignoring_them(changes, named, mlm_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the movie was good\n")
    config = _config(mlm_dir, corpus=CorpusConfig(path=str(corpus)), **changes(tmp_path),
                     recipe=RecipeConfig(stages=(StageConfig(terms=(TermConfig("mlm", 1.0),)),)))
    with pytest.raises(AlembertError, match=f"masked-LM distillation \\(corpus.path\\) does not take {named}"):
        run(config, tmp_path / "out")
    assert not (tmp_path / "out" / "student").exists()


def test_compression_passes_run_after_distillation(tiny_dir, tmp_path):
    from compress.cli import CompressStage

    config = _config(tiny_dir("bert"), compress=CompressStage(passes=("prune_ffn",), settings={"prune_ffn": {"ratio": 0.5}}))
    run(config, tmp_path / "out")
    compressed = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "compressed" / "model")
    assert compressed.config.intermediate_size == 32  # half of the tiny model's 64
    assert (tmp_path / "out" / "compressed" / "compress_report.md").is_file()
