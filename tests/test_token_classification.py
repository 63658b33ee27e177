"""Token classification (NER) as a task: reading, alignment, per-token losses, the ragged teacher cache and seqeval F1."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification, BertConfig

from alembert.data import DataConfig, encode, load_task, loader
from alembert.errors import AlembertError
from alembert.tagging import IGNORED, read_conll, to_iob2, word_chunks
from alembert.tasks import task_named, task_of
from distill.losses import LOSSES
from distill.models import Features, Teacher
from distill.teacher_cache import CachedTeacher
from tests.conftest import tiny_tokenizer

TAGS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
NER = task_named("token_classification")


def conll(path, sentences, separator=" "):
    lines = ["-DOCSTART- -X- -X- O", ""]
    for sentence in sentences:
        lines += [f"{word}{separator}NNP{separator}{tag}" for word, tag in sentence] + [""]
    path.write_text("\n".join(lines))
    return path


def ner_files(tmp_path, dev_tag="B-PER"):
    train = [[("John", "B-PER"), ("Smith", "I-PER"), ("visited", "O"), ("Paris", "B-LOC")],
             [("New", "B-LOC"), ("York", "I-LOC"), ("is", "O"), ("old", "O")]]
    dev = [[("Anna", dev_tag), ("left", "O")]]
    return DataConfig(task="files", task_type="token_classification", train=str(conll(tmp_path / "train.txt", train)),
                      dev=str(conll(tmp_path / "dev.txt", dev, "\t")), max_length=32)


def test_conll_files_are_read_with_docstart_skipped_and_tags_from_train(tmp_path):
    data = load_task(ner_files(tmp_path))
    assert data.label_names == TAGS  # "O" first, then by type and prefix
    first = data.splits["train"][0]
    assert first.text == ("John", "Smith", "visited", "Paris") and first.label == (3, 4, 0, 1)
    assert data.splits["dev"][0].label == (3, 0)  # tab-separated columns read the same


def test_a_dev_tag_absent_from_train_names_the_file_and_line(tmp_path):
    with pytest.raises(AlembertError, match=r"dev.txt line 3: tag B-ORG does not occur in the training set"):
        load_task(ner_files(tmp_path, dev_tag="B-ORG"))


def test_a_line_with_the_wrong_column_count_is_refused_with_its_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("John NNP B-PER\nSmith I-PER\n")
    with pytest.raises(AlembertError, match=r"bad.txt line 2 has 2 columns but earlier lines have 3"):
        read_conll(path)


def test_iob1_becomes_iob2_and_iob2_and_bioes_are_unchanged():
    assert to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == ("B-PER", "I-PER", "O", "B-LOC", "B-LOC")
    assert to_iob2(["B-PER", "I-PER", "O"]) == ("B-PER", "I-PER", "O")
    assert to_iob2(["S-PER", "B-LOC", "I-LOC", "E-LOC"]) == ("S-PER", "B-LOC", "I-LOC", "E-LOC")


def test_jsonl_rows_need_one_tag_per_token(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"tokens": ["John", "left"], "tags": ["B-PER", "O"]}) + "\n"
                    + json.dumps({"tokens": ["Rome"], "tags": ["B-LOC", "O"]}) + "\n")
    config = DataConfig(task="files", task_type="token_classification", train=str(path), text_column="tokens",
                        label_column="tags")
    with pytest.raises(AlembertError, match="train row 2 has 1 tokens but 2 tags"):
        load_task(config)


def test_labels_sit_on_first_pieces_or_on_all_pieces_with_b_turned_into_i(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    config = ner_files(tmp_path)
    data = load_task(config)
    example = data.splits["train"][0]
    pieces = tokenizer(list(example.text), is_split_into_words=True)
    word_ids = pieces.word_ids()
    first = encode(data, "train", tokenizer, config)[0]["labels"]
    every = encode(data, "train", tokenizer, DataConfig(**{**config.__dict__, "label_all_subtokens": True}))[0]["labels"]
    for position, word in enumerate(word_ids):
        if word is None:
            assert first[position] == every[position] == IGNORED
        elif position and word_ids[position - 1] == word:  # a continuation piece
            assert first[position] == IGNORED
            assert TAGS[every[position]] == TAGS[example.label[word]].replace("B-", "I-")
        else:
            assert first[position] == every[position] == example.label[word]
    assert any(word is not None and i and word_ids[i - 1] == word for i, word in enumerate(word_ids))  # the case is tested


def test_a_sentence_longer_than_max_length_is_split_between_words_and_keeps_every_tag(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    config = ner_files(tmp_path)
    data = load_task(config)
    short = DataConfig(**{**config.__dict__, "max_length": 6})
    rows = encode(data, "train", tokenizer, short)
    assert len(rows) > len(data.splits["train"]) and all(len(row["input_ids"]) <= 6 for row in rows)
    kept = [label for row in rows for label in row["labels"] if label != IGNORED]
    assert kept == [tag for example in data.splits["train"] for tag in example.label]
    assert [row["index"] for row in rows] == list(range(len(rows)))  # the teacher cache's keys stay unique
    assert word_chunks([2, 3, 1, 4], 5) == [(0, 2), (2, 4)] and word_chunks([3, 3, 6], 5) == [(0, 1), (1, 2), (2, 3)]


def features(logits, labels, attention_mask):
    return Features(logits=logits, attention_mask=attention_mask, labels=labels, task=NER)


def test_per_token_kd_is_hintons_kl_over_labelled_tokens_only():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    labels = torch.tensor([[IGNORED, 1, IGNORED, 2], [IGNORED, 0, IGNORED, IGNORED]])  # specials, pieces, padding
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    temperature = 2.0
    loss = LOSSES.get("kd").fn(features(student, labels, mask), features(teacher, labels, mask), temperature=temperature)
    by_hand = 0.0
    for b, t in [(0, 1), (0, 3), (1, 1)]:
        p = F.softmax(teacher[b, t] / temperature, -1)
        q = F.softmax(student[b, t] / temperature, -1)
        by_hand += float((p * (p.log() - q.log())).sum())
    assert math.isclose(float(loss), by_hand / 3 * temperature**2, rel_tol=1e-5)
    hard = LOSSES.get("hard").fn(features(student, labels, mask), None)
    assert math.isclose(float(hard), float(F.cross_entropy(student[[0, 0, 1], [1, 3, 1]], torch.tensor([1, 2, 0]))),
                        rel_tol=1e-5)


def test_seqeval_entity_f1_matches_a_hand_worked_example():
    names = ("O", "B-PER", "I-PER", "B-LOC")
    gold = torch.tensor([[1, 2, 0, 3], [3, 0, IGNORED, IGNORED]])
    guess = torch.tensor([[1, 0, 0, 3], [3, 0, 0, 0]])  # PER cut short (wrong), both LOCs right
    logits = F.one_hot(guess, 4).float()
    metrics = NER.metrics(logits, gold, names)
    # gold entities: PER(0-1), LOC, LOC; predicted: PER(0), LOC, LOC -> 2 correct of 3 each way
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3) and metrics["f1_LOC"] == 1.0 and metrics["f1_PER"] == 0.0
    assert metrics["token_accuracy"] == pytest.approx(5 / 6)


def tiny_ner_model(vocab_size: int):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(TAGS),
                        id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)},
                        problem_type="token_classification")
    return AutoModelForTokenClassification.from_config(config)


def test_the_ragged_teacher_cache_gives_the_teachers_logits_at_every_real_token(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    config = ner_files(tmp_path)
    data = load_task(config)
    model = tiny_ner_model(len(tokenizer))
    assert task_of(model.config) is NER
    rows = loader(encode(data, "train", tokenizer, config), tokenizer, batch_size=2, task=NER, shuffle=True)
    teacher = Teacher(model)
    cache = CachedTeacher.build(teacher, rows, torch.device("cpu"))
    assert [len(row) for row in cache.rows] == [len(r["input_ids"]) for r in encode(data, "train", tokenizer, config)]
    for batch in rows:
        cached, live = cache.features(batch).logits, teacher.features(batch).logits
        real = batch["attention_mask"].bool()
        assert cached.shape == live.shape and torch.allclose(cached[real], live[real], atol=1e-6)
        assert (cached[~real] == 0).all()  # padding is padding, not another row's logits


def test_a_saved_hub_dataset_with_classlabel_tag_sequences_keeps_the_tag_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    split = {"tokens": [["John", "Smith", "left"], ["Paris", "is", "big"]], "ner_tags": [[1, 2, 0], [3, 0, 0]]}
    datasets.DatasetDict({name: datasets.Dataset.from_dict(split, features=features)
                          for name in ("train", "validation", "test")}).save_to_disk(str(tmp_path / "hub"))
    data = load_task(DataConfig(task=str(tmp_path / "hub"), task_type="token_classification", text_column="tokens",
                                label_column="ner_tags"))
    assert data.label_names == tuple(names)  # the dataset's declared tag set, in its order, as for a ClassLabel
    example = data.splits["dev"][0]
    assert [data.label_names[i] for i in example.label] == ["B-PER", "I-PER", "O"] and example.text == ("John", "Smith", "left")


def test_a_token_model_saved_by_plain_transformers_is_read_back_as_a_token_task(tmp_path):
    model = tiny_ner_model(40)
    model.config.problem_type = None  # as transformers itself leaves it
    model.save_pretrained(tmp_path / "plain")
    from transformers import AutoConfig

    assert task_of(AutoConfig.from_pretrained(tmp_path / "plain")) is NER
    assert task_of(BertConfig(num_labels=3)).name == "classification"
