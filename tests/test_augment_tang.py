"""Tang et al.'s augmentation: embedding neighbours by hand, masking and n-gram sampling at their extremes, distinct
variants with labels kept, determinism, pairs never cut, and a run whose transfer set it enlarges."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_tokenizer
from alembert.data import Example
from alembert.errors import AlembertError
from distill.augment import AugmentConfig, augment_with
from distill.augment_tang import nearest_words, tang_augment

EXAMPLES = [
    Example("The movie was really good but the ending felt dull", None, 1),
    Example("this film is terrible", None, 0),
    Example("the plot seemed clever", "i watched it on sunday", 1),
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tang-tok"))


def table_with(tokenizer, pairs: dict[str, str]) -> torch.Tensor:
    """A random input table in which each key word's row points the same way as its value's (its nearest word)."""
    torch.manual_seed(0)
    table = torch.randn(len(tokenizer), 16)
    for word, twin in pairs.items():
        table[tokenizer.convert_tokens_to_ids(word)] = 3.0 * table[tokenizer.convert_tokens_to_ids(twin)]
    return table


def test_the_nearest_word_is_the_one_pointing_the_same_way(tokenizer):
    table = table_with(tokenizer, {"good": "nice", "dull": "boring"})
    found = nearest_words(["good", "Dull", "good"], table, tokenizer, k=3)
    assert found["good"][0] == "nice" and found["dull"][0] == "boring"
    assert all(len(options) == 3 and word not in options for word, options in found.items())


def config(**changes) -> AugmentConfig:
    return AugmentConfig(**{"enabled": True, "method": "tang", "n_per_example": 4, **changes})


def test_variants_are_distinct_keep_labels_and_repeat_with_the_seed(tokenizer):
    table = table_with(tokenizer, {"good": "nice"})
    out = tang_augment(EXAMPLES, table, tokenizer, config(mask_prob=0.3, neighbour_prob=0.3))
    assert out == tang_augment(EXAMPLES, table, tokenizer, config(mask_prob=0.3, neighbour_prob=0.3))
    assert out != tang_augment(EXAMPLES, table, tokenizer, config(mask_prob=0.3, neighbour_prob=0.3, seed=1))
    for original in EXAMPLES:
        group = [e for e in out if e.label == original.label and (e.text_pair is None) == (original.text_pair is None)]
        assert original in group
    texts = [(e.text, e.text_pair) for e in out]
    assert len(texts) == len(set(texts))  # no duplicate, and no copy of an original beside itself
    assert len(out) <= len(EXAMPLES) * 5


def test_masking_everything_and_one_word_ngrams(tokenizer):
    table = table_with(tokenizer, {})
    masked = tang_augment(EXAMPLES[1:2], table, tokenizer, config(mask_prob=1.0, neighbour_prob=0.0, ngram_prob=0.0,
                                                                  keep_original=False))
    assert [e.text for e in masked] == ["[MASK] [MASK] [MASK] [MASK]"]  # every draw gives the same: one variant
    single = tang_augment(EXAMPLES[:1], table, tokenizer, config(mask_prob=0.0, neighbour_prob=0.0, ngram_prob=1.0,
                                                                 max_ngram=1, n_per_example=20, keep_original=False))
    assert single and all(e.text in EXAMPLES[0].text.split() for e in single)


def test_a_pair_is_never_cut_to_an_ngram(tokenizer):
    out = tang_augment(EXAMPLES[2:], table_with(tokenizer, {}), tokenizer,
                       config(mask_prob=0.2, neighbour_prob=0.0, ngram_prob=1.0, max_ngram=1, keep_original=False))
    assert out and all(len(e.text.split()) == 4 and len(e.text_pair.split()) == 5 for e in out)


def test_tang_needs_no_mlm_model_and_reads_the_teachers_embeddings(tiny_dir):
    out = augment_with(config(n_per_example=2), EXAMPLES, teacher=str(tiny_dir("bert", 2)))
    assert EXAMPLES[0] in out and len(EXAMPLES) < len(out) <= 3 * len(EXAMPLES)
    with pytest.raises(AlembertError, match="sum above 1"):
        config(mask_prob=0.6, neighbour_prob=0.6)
