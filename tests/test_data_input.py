"""Data as users really have it: other encodings, ragged rows, broken quotes, and hub/save_to_disk datasets
with unlabelled test splits and ClassLabel columns. No network: hub data is built here and saved to disk."""

import re

import pytest

from alembert.config import from_dict
from alembert.data import DataConfig, load_task
from alembert.errors import AlembertError

datasets = pytest.importorskip("datasets")

HEADER = b"sentence\tlabel\n"


def _files(tmp_path, data: bytes, name: str = "train.tsv", **settings) -> DataConfig:
    path = tmp_path / name
    path.write_bytes(data)
    return DataConfig(task="files", train=str(path), **settings)


def test_latin1_bytes_fail_with_file_line_and_setting(tmp_path):
    config = _files(tmp_path, HEADER + b"good\tpos\n" + "caf\xe9 bad\tneg\n".encode("latin-1"))
    with pytest.raises(AlembertError) as caught:
        load_task(config)
    message = str(caught.value)
    assert f"{config.train} line 3 is not valid utf-8 (byte 0xe9 at column 4)" in message
    assert "data.encoding=latin-1" in message and "\n" not in message


def test_the_same_file_loads_with_encoding_latin1(tmp_path):
    config = _files(tmp_path, HEADER + b"good\tpos\n" + "caf\xe9 bad\tneg\n".encode("latin-1"), encoding="latin-1")
    task = load_task(config)
    assert task.splits["train"][1].text == "caf\u00e9 bad"


def test_encoding_is_a_config_key_and_an_unknown_one_fails_in_one_line(tmp_path):
    assert from_dict(DataConfig, {"encoding": "cp1252"}).encoding == "cp1252"
    with pytest.raises(AlembertError, match="data.encoding=klingon is not a text encoding"):
        load_task(_files(tmp_path, HEADER + b"good\tpos\n", encoding="klingon"))


def test_utf8_bom_does_not_stick_to_the_first_column(tmp_path):
    task = load_task(_files(tmp_path, b"\xef\xbb\xbf" + HEADER + b"good\tpos\n"))
    assert task.splits["train"][0].text == "good"


@pytest.mark.parametrize("row, count", [(b"only one field\n", "1 tab-separated field but"),
                                        (b"one\ttwo\tthree\n", "3 tab-separated fields but")])
def test_ragged_tsv_rows_name_the_file_and_line(tmp_path, row, count):
    # the blank line 3 is skipped but still counted, so the ragged row is line 5
    config = _files(tmp_path, HEADER + b"good\tpos\n\nbad\tneg\n" + row + b"fine\tpos\n")
    with pytest.raises(AlembertError) as caught:
        load_task(config)
    message = str(caught.value)
    assert f"data file {config.train} line 5 has {count} the header has 2" in message
    assert "stray tabs" in message


def test_ragged_headerless_csv_is_compared_with_the_first_row(tmp_path):
    config = _files(tmp_path, b"a,pos\nb,neg\nc,d,pos\n", name="train.csv", header=False,
                    text_column="0", label_column="1")
    with pytest.raises(AlembertError, match=r"line 3 has 3 comma-separated fields but the first row \(line 1\) has 2"):
        load_task(config)


def test_csv_with_an_unclosed_quote_names_the_line(tmp_path):
    config = _files(tmp_path, b'sentence,label\ngood,pos\n"never closed,neg\nbad,neg\n', name="train.csv")
    with pytest.raises(AlembertError) as caught:
        load_task(config)
    message = str(caught.value)
    assert f"data file {config.train} line 3 is not valid CSV" in message
    assert "quote" in message.split(";", 1)[1] and "\n" not in message


def test_csv_quoted_newlines_still_load(tmp_path):
    task = load_task(_files(tmp_path, b'sentence,label\n"two\nlines, quoted",pos\nbad,neg\n', name="train.csv"))
    assert task.splits["train"][0].text == "two\nlines, quoted"


def _save_glue_like(tmp_path, test_labels=None):
    """A DatasetDict shaped like GLUE SST-2: ClassLabel labels, and a test split with -1 everywhere."""
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    splits = {"train": (["good", "bad", "great", "awful"], [1, 0, 1, 0]),
              "validation": (["fine", "poor"], [1, 0]),
              "test": (["who knows", "unsure", "maybe"], test_labels or [-1, -1, -1])}
    dataset = datasets.DatasetDict({name: datasets.Dataset.from_dict({"sentence": texts, "label": labels}, features=features)
                                    for name, (texts, labels) in splits.items()})
    dataset.save_to_disk(str(tmp_path / "glue-like"))
    return str(tmp_path / "glue-like")


def test_saved_dataset_drops_the_unlabelled_test_split_and_keeps_classlabel_names(tmp_path, capsys):
    task = load_task(DataConfig(task=_save_glue_like(tmp_path)))
    assert set(task.splits) == {"train", "dev"}
    assert task.label_names == ("neg", "pos")
    assert [e.label for e in task.splits["train"]] == [1, 0, 1, 0]
    assert [e.text for e in task.splits["dev"]] == ["fine", "poor"]
    printed = capsys.readouterr()
    assert "the test split ('test') has no labels (all -1); evaluating on dev instead" in printed.out + printed.err


def test_classlabel_names_keep_their_order_not_sorted(tmp_path):
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["zeta", "alpha"])})
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [0, 1]}, features=features)}) \
        .save_to_disk(str(tmp_path / "ordered"))
    task = load_task(DataConfig(task=str(tmp_path / "ordered")))
    assert task.label_names == ("zeta", "alpha") and [e.label for e in task.splits["train"]] == [0, 1]


def test_partly_unlabelled_split_fails_with_the_count(tmp_path):
    directory = _save_glue_like(tmp_path, test_labels=[1, -1, 0])
    with pytest.raises(AlembertError, match=r"'test' split of .* has 1 of 3 rows without a label .*first is row 2"):
        load_task(DataConfig(task=directory))


def test_missing_split_and_columns_are_named(tmp_path, capsys):
    directory = _save_glue_like(tmp_path)
    with pytest.raises(AlembertError, match=r"has no split 'training' \(it has train, validation, test\)"):
        load_task(DataConfig(task=directory, hub_splits=("training", "validation", "test")))
    with pytest.raises(AlembertError, match=r"'train' split of .* has no column text \(it has sentence, label\)"):
        load_task(DataConfig(task=directory, text_column="text"))
    with pytest.raises(AlembertError, match=r"has no column y \(it has sentence, label\)"):
        load_task(DataConfig(task=directory, label_column="y"))
    task = load_task(DataConfig(task=directory, hub_splits=("train", "dev", "test")))
    assert set(task.splits) == {"train"}
    printed = capsys.readouterr().out
    assert re.search(r"has no split 'dev' \(it has train, validation, test\)", printed)
    assert "evaluating on train instead" in printed


def test_a_split_without_a_label_column_is_dropped(tmp_path, capsys):
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": ["x", "y"]}),
                          "validation": datasets.Dataset.from_dict({"sentence": ["a"], "label": ["x"]}),
                          "test": datasets.Dataset.from_dict({"sentence": ["c"]})}).save_to_disk(str(tmp_path / "nolabel"))
    task = load_task(DataConfig(task=str(tmp_path / "nolabel")))
    assert set(task.splits) == {"train", "dev"} and task.label_names == ("x", "y")
    assert "has no labels (no column 'label')" in capsys.readouterr().out


def test_an_unreadable_saved_directory_fails_in_one_line(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(AlembertError, match=r"could not read the dataset saved in .*broken"):
        load_task(DataConfig(task=str(broken)))


def test_run_setup_on_a_saved_dataset_evaluates_on_dev(tiny_dir, tmp_path):
    from pipeline.run import FinetuneConfig, RunConfig, setup

    config = RunConfig(teacher=str(tiny_dir("bert")), data=DataConfig(task=_save_glue_like(tmp_path), max_length=16),
                       finetune=FinetuneConfig(mode="never", cache_dir=str(tmp_path / "cache")))
    prepared = setup(config)
    assert prepared.loaders.eval_split == "dev"
    assert prepared.task.label_names == ("neg", "pos")
    assert len(prepared.loaders.eval.dataset) == 2
