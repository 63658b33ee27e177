"""student.tokenizer=words: a word-level vocabulary from the transfer set, split and lower-cased as the teacher does,
its table started from the teacher's pieces, and a small student that trains on it and exports with parity."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification

from alembert.errors import AlembertError
from alembert.word_vocab import WordVocabConfig, word_tokenizer
from conftest import tiny_config, tiny_tokenizer
from distill.models import StudentConfig, build_student
from distill.students import input_table, pca, teacher_pieces
from export.bundle import export_model
from export.config import ExportConfig, LatencyConfig, ParityConfig
from export.runtime import Predictor
from pipeline.run import run, setup
from tests.test_small_students import SMALL, run_config

CORPUS = ["The movie was GREAT!", "the plot was dull", "a great cast , a dull plot", "zyx"]


@pytest.fixture(scope="module")
def teacher_tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("word-tok"))


def test_words_of_the_corpus_get_their_own_ids_and_others_become_unk(teacher_tokenizer, tmp_path):
    words = word_tokenizer(CORPUS, teacher_tokenizer, WordVocabConfig())
    assert words.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert {"movie", "great", "!", ",", "zyx"} <= set(words.get_vocab())  # lower-cased and split like the teacher
    encoded = words("A great MOVIE, truly", "dull")["input_ids"]
    assert words.convert_ids_to_tokens(encoded) == ["[CLS]", "a", "great", "movie", ",", "[UNK]", "[SEP]", "dull", "[SEP]"]
    words.save_pretrained(tmp_path / "words")
    plain = Tokenizer.from_file(str(tmp_path / "words" / "tokenizer.json"))  # what the torch-free runtime reads
    assert plain.encode("A great MOVIE, truly", "dull").ids == encoded


def test_min_count_and_max_size_bound_the_vocabulary(teacher_tokenizer):
    frequent = word_tokenizer(CORPUS, teacher_tokenizer, WordVocabConfig(min_count=2))
    assert set(frequent.get_vocab()) - set(teacher_tokenizer.all_special_tokens) == {"the", "was", "great", "a", "dull", "plot"}
    capped = word_tokenizer(CORPUS, teacher_tokenizer, WordVocabConfig(max_size=8))
    assert len(capped) == 8
    with pytest.raises(AlembertError, match="found no word occurring 9\\+ times"):
        word_tokenizer(CORPUS, teacher_tokenizer, WordVocabConfig(min_count=9))


def test_a_words_row_starts_as_the_mean_of_the_teachers_pieces(teacher_tokenizer):
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(tiny_config("bert", len(teacher_tokenizer), 2)).eval()
    words = word_tokenizer(CORPUS, teacher_tokenizer, WordVocabConfig())
    pieces = teacher_pieces(words, teacher_tokenizer)
    assert pieces[words.convert_tokens_to_ids("movie")] == [teacher_tokenizer.convert_tokens_to_ids("movie")]
    assert pieces[words.convert_tokens_to_ids("zyx")] == teacher_tokenizer("zyx", add_special_tokens=False)["input_ids"]
    assert len(pieces[words.convert_tokens_to_ids("zyx")]) == 3  # z ##y ##x: not a teacher word
    table = teacher.get_input_embeddings().weight.detach()
    by_hand = torch.stack([table[ids].mean(0) for ids in pieces])
    torch.testing.assert_close(input_table(teacher, 8, teacher_tokenizer, pieces), pca(by_hand, 8, "word table"))
    student = build_student(teacher, StudentConfig(kind="cnn", settings=SMALL["cnn"] | {"embedding_dim": 24}), words,
                            teacher_tokenizer=teacher_tokenizer)
    assert len(words) == 16 and student.embeddings.weight.shape == (16, 24)
    assert torch.count_nonzero(student.embeddings.weight[:, 16:]) == 0  # 16 rows have at most 16 components


def test_a_cnn_student_on_words_trains_saves_its_tokenizer_and_exports_with_parity(tiny_dir, tmp_path):
    config = run_config(tiny_dir("bert", 2), tmp_path / "cache", "cnn",
                        student=StudentConfig(kind="cnn", settings=SMALL["cnn"], tokenizer="words"))
    prepared = setup(config)
    assert len(prepared.student_tokenizer) < len(prepared.tokenizer)  # the demo's words, not the teacher's pieces
    rows = run(config, tmp_path / "out")
    assert rows[1]["model"] == "student (KD)" and rows[1]["params"] < rows[0]["params"]
    saved = tmp_path / "out" / "student"
    vocab = json.loads((saved / "tokenizer.json").read_text())["model"]
    assert vocab["type"] == "WordLevel" and len(vocab["vocab"]) == len(prepared.student_tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(saved).eval()
    export = ExportConfig(variants=("optimized",), parity=ParityConfig(batch_sizes=(1, 2), max_lengths=(16,), samples=4),
                          latency=LatencyConfig(runs=2, warmup=1))
    bundle = export_model(model, prepared.student_tokenizer, tmp_path / "bundle", export)
    assert json.loads((bundle / "manifest.json").read_text())["variants"]["fp32"]["max_abs_diff"] < 1e-4
    texts = ["the movie was great", "a dull plot"]
    with torch.no_grad():
        expected = model(**{k: v for k, v in prepared.student_tokenizer(texts, padding=True, return_tensors="pt").items()
                            if k in ("input_ids", "attention_mask")}).logits.argmax(-1).tolist()
    assert [answer["label"] for answer in Predictor(bundle).predict(texts)] == [model.config.id2label[i] for i in expected]
