"""data.transfer: a file of unlabelled texts joins the transfer set; the teacher labels it (soft targets only), the
teacher and the baseline still learn from the training set alone, and bad files are one line."""

from __future__ import annotations

from dataclasses import replace

import pytest

from alembert.data import DataConfig, load_task
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from pipeline.run import RunConfig, _finetune_key, run, setup
from tests.test_labelled_subset import config

DATA = DataConfig(demo=DemoConfig(train_size=60, dev_size=20, test_size=20), max_length=16)
TEXTS = ["the movie was brilliant", "", "a dull and boring plot", "the cast was superb", "not good at all"]


def with_transfer(path) -> DataConfig:
    return replace(DATA, transfer=str(path))


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "unlabelled.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def test_the_files_texts_follow_the_training_examples_in_the_transfer_set_only(tiny_dir, tmp_path, texts):
    teacher = tiny_dir("bert", 2)
    plain, extended = config(teacher, tmp_path, data=DATA), config(teacher, tmp_path, data=with_transfer(texts))
    before, after = setup(plain), setup(extended)
    assert len(after.loaders.train.dataset) == len(before.loaders.train.dataset) == 60
    assert len(after.loaders.transfer.dataset) == 60 + 4  # the blank line is skipped
    encoded = after.tokenizer(TEXTS[2], truncation=True, max_length=16)["input_ids"]
    assert after.loaders.transfer.dataset[61]["input_ids"] == encoded  # 60 training examples, then the texts
    assert _finetune_key(before, plain) == _finetune_key(after, extended)  # the same fine-tuned teacher
    rows = run(extended, tmp_path / "out")
    assert rows[1]["model"] == "student (KD)"


def test_labels_are_refused_beside_it_and_bad_files_are_one_line(tiny_dir, tmp_path, texts):
    teacher = tiny_dir("bert", 2)
    with pytest.raises(AlembertError, match="unlabelled examples .*data.transfer.*weights the hard term"):
        setup(config(teacher, tmp_path, data=with_transfer(texts), recipe=RunConfig().recipe))
    with pytest.raises(AlembertError, match="data.transfer file .*nope.txt does not exist"):
        load_task(with_transfer(tmp_path / "nope.txt"))
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(AlembertError, match="holds no text"):
        load_task(with_transfer(tmp_path / "blank.txt"))
    (tmp_path / "other.csv").write_text("review,stars\ngreat,5\n")
    with pytest.raises(AlembertError, match="other.csv"):
        load_task(with_transfer(tmp_path / "other.csv"))


def test_a_table_gives_its_text_column_and_token_tasks_refuse_it(tmp_path):
    (tmp_path / "reviews.jsonl").write_text('{"sentence": "a fine film", "stars": 4}\n{"sentence": "dull"}\n')
    data = load_task(with_transfer(tmp_path / "reviews.jsonl"))
    assert [(e.text, e.label) for e in data.unlabelled] == [("a fine film", 0), ("dull", 0)]
    (tmp_path / "scores.tsv").write_text("sentence\tlabel\ngood\t0.9\nbad\t0.1\n")
    scores = DataConfig(task="files", train=str(tmp_path / "scores.tsv"), task_type="regression",
                        transfer=str(tmp_path / "reviews.jsonl"))
    assert {e.label for e in load_task(scores).unlabelled} == {0.0}
    with pytest.raises(AlembertError, match="data.transfer does not work for the token_classification task"):
        load_task(replace(with_transfer(tmp_path / "reviews.jsonl"), task_type="token_classification"))
