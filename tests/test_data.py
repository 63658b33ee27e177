import json

import pytest
import torch

from alembert.tasks import task_named
from alembert.data import DataConfig, encode, load_task, loader
from alembert.demo import DemoConfig, generate
from alembert.errors import AlembertError
from tests.conftest import tiny_tokenizer


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_tsv_csv_and_jsonl_load_with_string_labels(tmp_path):
    tsv = _write(tmp_path / "train.tsv", "sentence\tlabel\ngood film\tpos\nbad film\tneg\n")
    csv_dev = _write(tmp_path / "dev.csv", 'text,y\n"fine, really",pos\n')
    jsonl = _write(tmp_path / "test.jsonl", '{"sentence": "dull", "label": "neg"}\n\n')
    task = load_task(DataConfig(task="files", train=tsv, test=jsonl))
    assert task.label_names == ("neg", "pos")
    assert [e.label for e in task.splits["train"]] == [1, 0]
    assert task.splits["test"][0].label == 0
    dev = load_task(DataConfig(task="files", train=csv_dev, text_column="text", label_column="y"))
    assert dev.splits["train"][0].text == "fine, really"


def test_headerless_pair_file_and_numeric_labels(tmp_path):
    train = _write(tmp_path / "train.tsv", "a cat\ta dog\t2\nsome text\tother\t10\n")
    task = load_task(DataConfig(task="files", train=train, header=False, text_column="0",
                                text_pair_column="1", label_column="2"))
    assert task.label_names == ("2", "10")  # numeric order, not string order
    assert task.splits["train"][0].text_pair == "a dog"


def test_regression_labels_are_floats(tmp_path):
    train = _write(tmp_path / "train.jsonl", json.dumps({"sentence": "x", "label": 0.25}) + "\n")
    task = load_task(DataConfig(task="files", train=train, task_type="regression"))
    assert task.label_names is None and task.splits["train"][0].label == 0.25


@pytest.mark.parametrize("dev_text, message", [
    ("sentence\tlabel\nok\tmaybe\n", r"dev row 1: label 'maybe' is not one of the training labels \['neg', 'pos'\]"),
    ("sentence\tlabel\n", "dev.tsv has no rows"),
    ("text\tlabel\nok\tpos\n", "has no column sentence"),
])
def test_bad_dev_files_give_one_clear_error(tmp_path, dev_text, message):
    train = _write(tmp_path / "train.tsv", "sentence\tlabel\ngood\tpos\nbad\tneg\n")
    dev = _write(tmp_path / "dev.tsv", dev_text)
    with pytest.raises(AlembertError, match=message):
        load_task(DataConfig(task="files", train=train, dev=dev))


def test_missing_file_and_empty_train(tmp_path):
    with pytest.raises(AlembertError, match="does not exist"):
        load_task(DataConfig(task="files", train=str(tmp_path / "nope.tsv")))
    empty = _write(tmp_path / "train.tsv", "sentence\tlabel\n")
    with pytest.raises(AlembertError, match="no rows|empty"):
        load_task(DataConfig(task="files", train=empty))


def test_tokenisation_truncates_and_pads_per_batch(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    task = load_task(DataConfig(demo=DemoConfig(train_size=8, dev_size=2, test_size=2)))
    rows = encode(task, "train", tokenizer, DataConfig(max_length=6))
    assert max(len(r["input_ids"]) for r in rows) <= 6
    batch = next(iter(loader(rows, tokenizer, batch_size=8, task=task_named("classification"))))
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (8, width)
    assert torch.equal(batch["attention_mask"].sum(1), torch.tensor([len(r["input_ids"]) for r in rows]))
    assert batch["index"].tolist() == list(range(8))


def test_demo_task_is_deterministic_balanced_and_varied():
    first, second = generate(DemoConfig(train_size=1000)), generate(DemoConfig(train_size=1000))
    assert first == second
    labels = [row["label"] for row in first["train"]]
    assert 0.4 < labels.count("positive") / len(labels) < 0.6
    assert len({row["sentence"] for row in first["train"]}) > 950
