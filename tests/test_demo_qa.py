"""The generated extractive QA demo: exact offsets, determinism, sizes, vocabulary coverage and label noise."""

from __future__ import annotations

from dataclasses import replace

import pytest

from alembert import demo_qa
from alembert.demo import DemoConfig

SMALL = DemoConfig(train_size=300, dev_size=120, test_size=120)


@pytest.fixture(scope="module")
def rows():
    return demo_qa.generate(SMALL)


def test_sizes_follow_the_config(rows):
    assert {split: len(split_rows) for split, split_rows in rows.items()} == {"train": 300, "dev": 120, "test": 120}
    tiny = demo_qa.generate(DemoConfig(train_size=7, dev_size=0, test_size=2))
    assert [len(tiny[split]) for split in ("train", "dev", "test")] == [7, 0, 2]


def test_every_answer_offset_is_exact(rows):
    for split_rows in rows.values():
        for question, context, answers in split_rows:
            assert len(answers["text"]) == len(answers["answer_start"]) >= 1
            for text, start in zip(answers["text"], answers["answer_start"]):
                assert context[start:start + len(text)] == text
                assert start == 0 or context[start - 1] == " "
                assert start + len(text) == len(context) or context[start + len(text)] == " "
                assert 1 <= len(text.split()) <= 3


def test_train_has_one_answer_and_evaluation_splits_one_or_two(rows):
    assert all(len(answers["text"]) == 1 for _, _, answers in rows["train"])
    for split in ("dev", "test"):
        counts = [len(answers["text"]) for _, _, answers in rows[split]]
        assert set(counts) == {1, 2}


def test_paragraphs_are_short_and_questions_are_questions(rows):
    for split_rows in rows.values():
        for question, context, _ in split_rows:
            assert 3 <= context.split().count(".") <= 6
            assert len(context.split()) <= 80
            assert question.endswith(" ?")


def test_questions_vary_in_wording(rows):
    openings = {" ".join(question.split()[:2]) for question, _, _ in rows["train"]}
    assert len(openings) >= 10


def test_deterministic_in_the_seed():
    assert demo_qa.generate(SMALL) == demo_qa.generate(SMALL)
    other = demo_qa.generate(replace(SMALL, seed=SMALL.seed + 1))
    assert other["train"] != demo_qa.generate(SMALL)["train"]


def test_vocabulary_covers_every_word(rows):
    vocabulary = set(demo_qa.vocabulary())
    assert all(word == word.lower() for word in vocabulary)
    for split_rows in rows.values():
        for question, context, _ in split_rows:
            assert set(question.split()) <= vocabulary
            assert set(context.split()) <= vocabulary


def test_noise_moves_train_and_dev_answers_to_a_distractor_but_never_test():
    clean = demo_qa.generate(replace(SMALL, noise=0.0))
    noisy = demo_qa.generate(replace(SMALL, noise=1.0))
    for split in ("train", "dev"):
        for (question, context, truth), (noisy_question, noisy_context, wrong) in zip(clean[split], noisy[split]):
            assert (question, context) == (noisy_question, noisy_context)
            assert wrong["text"][0] != truth["text"][0]
            assert wrong["text"][0] in context
    assert clean["test"] == noisy["test"]


def test_noise_rate_is_roughly_the_configured_one():
    clean = demo_qa.generate(replace(SMALL, train_size=2000, noise=0.0))["train"]
    noisy = demo_qa.generate(replace(SMALL, train_size=2000, noise=0.2))["train"]
    changed = sum(a != b for a, b in zip(clean, noisy)) / len(clean)
    assert 0.15 < changed < 0.25
