"""A student with a tokenizer of its own: the teacher reads each example in its WordPiece encoding, the student in
a byte-level BPE one, and the KD loss compares their outputs on the same example."""

from __future__ import annotations

import pytest
import torch

from conftest import demo_loaders
from tokenizers_real import real_tokenizer
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from alembert.modeldir import load_model_dir, load_tokenizer
from alembert.training import TrainConfig
from distill.cross_tokenizer import TEACHER_PREFIX, paired_loader, teacher_view
from distill.models import StudentConfig
from distill.recipes import RecipeConfig, StageConfig, TermConfig
from pipeline.run import FinetuneConfig, RunConfig, run, setup

DATA = DataConfig(demo=DemoConfig(train_size=200, dev_size=40, test_size=40), max_length=32)
TRAIN = TrainConfig(epochs=2, batch_size=16, lr=1e-3)


def config_for(teacher_dir, tokenizer_dir, cache, **changes) -> RunConfig:
    base = dict(teacher=str(teacher_dir), data=DATA, train=TRAIN, baseline=True, latency_seq_len=16,
                student=StudentConfig(num_layers=2, tokenizer=str(tokenizer_dir)),
                finetune=FinetuneConfig(mode="always", cache_dir=str(cache), train=TRAIN))
    return RunConfig(**{**base, **changes})


def test_each_side_reads_its_own_encoding_of_the_same_rows(tiny_dir, tmp_path):
    teacher_tok = load_tokenizer(str(tiny_dir("bert", layers=2)))
    student_tok = real_tokenizer("byte-bpe", tmp_path / "bpe")
    student_train, _ = demo_loaders(student_tok)
    teacher_train, _ = demo_loaders(teacher_tok)
    batch = next(iter(paired_loader(student_train, teacher_train)))
    view = teacher_view(batch)
    for i, index in enumerate(batch["index"].tolist()):
        text = teacher_train.dataset[index]  # the same example, whichever order the batch drew
        mine = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        theirs = view["input_ids"][i][view["attention_mask"][i].bool()].tolist()
        assert mine == student_train.dataset[index]["input_ids"] and theirs == text["input_ids"]
    assert student_tok.pad_token_id == 1 and torch.equal(view["labels"], batch["labels"])
    assert not any(key.startswith(TEACHER_PREFIX) for key in view)


def test_a_bpe_student_distils_from_a_wordpiece_teacher_end_to_end(tiny_dir, tmp_path):
    real_tokenizer("byte-bpe", tmp_path / "bpe")
    rows = run(config_for(tiny_dir("bert", layers=2), tmp_path / "bpe", tmp_path / "cache"), tmp_path / "run")
    student = load_model_dir(tmp_path / "run" / "student")
    saved = load_tokenizer(str(tmp_path / "run" / "student"))
    assert student.config.vocab_size == len(saved) == 400 and saved.pad_token_id == student.config.pad_token_id == 1
    by_name = {row["model"]: row for row in rows}
    assert set(by_name) == {"teacher", "student (KD)", "student (no KD)"}
    assert by_name["student (KD)"]["params"] < by_name["teacher"]["params"] + 400 * 32  # 2 of its 2 layers, own table
    assert 0.0 <= by_name["student (KD)"]["kl_to_teacher"] < float("inf")


def test_the_teachers_layers_are_copied_but_not_its_word_table(tiny_dir, tmp_path):
    from distill.models import build_student

    teacher = load_model_dir(tiny_dir("bert", layers=2))
    tokenizer = real_tokenizer("byte-bpe", tmp_path / "bpe")
    student = build_student(teacher, StudentConfig(num_layers=2), tokenizer)
    assert student.get_input_embeddings().weight.shape[0] == 400
    torch.testing.assert_close(student.bert.encoder.layer[1].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight)


@pytest.mark.parametrize("changes, message", [
    ({"recipe": RecipeConfig(stages=(StageConfig(terms=(TermConfig("distilbert_cos", 1.0),)),))},
     r"recipe stage '.*' has layer-wise terms, which need the teacher's and the student's tokens aligned"),
    ({"data": DataConfig(task_type="token_classification")}, r"student.tokenizer does not work for the token_classification task"),
])
def test_what_two_tokenizers_cannot_align_is_refused_before_training(changes, message, tiny_dir, tmp_path):
    real_tokenizer("byte-bpe", tmp_path / "bpe")
    with pytest.raises(AlembertError, match=message):
        setup(config_for(tiny_dir("bert", layers=2), tmp_path / "bpe", tmp_path / "cache", **changes))
