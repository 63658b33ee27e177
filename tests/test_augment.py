"""TinyBERT augmentation: counts, kept labels, whole-word replacement by the masked-LM's predictions, determinism."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForMaskedLM, BertConfig

from conftest import tiny_tokenizer
from distill.augment import AugmentConfig, augment, augment_with
from alembert.data import Example
from alembert.errors import AlembertError

EXAMPLES = [
    Example("The movie was really good, but the ending felt dull.", None, 1),
    Example("this film is terrible", None, 0),
    Example("the zyzzyva seemed clever", "i watched it on sunday", 1),
]


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("augment-mlm")
    tokenizer = tiny_tokenizer(directory)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(directory)
    return model.eval(), tokenizer, directory


def words(text: str) -> list[str]:
    return text.replace(",", " ,").replace(".", " .").split()


def test_count_labels_and_closeness(mlm):
    model, tokenizer, _ = mlm
    out = augment(EXAMPLES, model, tokenizer, n_per_example=3, replace_prob=0.3, top_k=5, seed=1)
    assert len(out) == len(EXAMPLES) * 4
    kept = total = 0
    for i, original in enumerate(EXAMPLES):
        group = out[i * 4:(i + 1) * 4]
        assert group[0] == original
        for variant in group[1:]:
            assert variant.label == original.label
            assert variant.text != original.text
            before, after = words(original.text), words(variant.text)
            assert len(after) == len(before)  # whole words are swapped one for one, never split or merged
            kept, total = kept + sum(a == b for a, b in zip(before, after)), total + len(before)
            assert (variant.text_pair is None) == (original.text_pair is None)
    assert kept / total > 0.5  # about 1 - replace_prob of the words stay
    assert augment(EXAMPLES, model, tokenizer, n_per_example=2, keep_original=False, seed=1)[0].label == 1


def test_deterministic_in_the_seed(mlm):
    model, tokenizer, _ = mlm
    first = augment(EXAMPLES, model, tokenizer, n_per_example=4, seed=7)
    assert augment(EXAMPLES, model, tokenizer, n_per_example=4, seed=7) == first
    assert augment(EXAMPLES, model, tokenizer, n_per_example=4, seed=8) != first


def test_replacements_are_the_mlm_top_predictions(mlm):
    model, tokenizer, _ = mlm
    favourite = tokenizer.convert_tokens_to_ids("brilliant")
    biased = AutoModelForMaskedLM.from_config(model.config)
    biased.load_state_dict(model.state_dict())
    with torch.no_grad():
        biased.cls.predictions.bias[favourite] += 1e4  # the MLM now predicts "brilliant" first everywhere
    out = augment(EXAMPLES, biased, tokenizer, n_per_example=1, replace_prob=1.0, top_k=1, keep_original=False)
    assert out[0].text == "Brilliant brilliant brilliant brilliant brilliant, brilliant brilliant brilliant brilliant brilliant."
    assert out[2].text == "brilliant brilliant brilliant brilliant"  # the multi-piece "zyzzyva" is one word
    assert out[2].text_pair == "brilliant brilliant brilliant brilliant brilliant"
    keep_one = augment([Example("a brilliant film", None, 1)], biased, tokenizer, n_per_example=1, replace_prob=1.0,
                       top_k=1, keep_original=False)
    assert keep_one[0].text.split()[1] != "brilliant"  # a word is never replaced by itself


def test_bad_settings_fail_in_one_line(mlm, tiny_dir):
    model, tokenizer, directory = mlm
    with pytest.raises(AlembertError, match="replace_prob"):
        augment(EXAMPLES, model, tokenizer, replace_prob=1.5)
    with pytest.raises(AlembertError, match="n_per_example"):
        augment(EXAMPLES, model, tokenizer, n_per_example=0)
    with pytest.raises(AlembertError, match="augment.mlm"):
        augment_with(AugmentConfig(enabled=True), EXAMPLES)
    with pytest.raises(AlembertError, match="no trained masked-LM head"):
        augment_with(AugmentConfig(enabled=True, mlm=str(tiny_dir("bert", 2))), EXAMPLES)
    assert augment_with(AugmentConfig(), EXAMPLES) == EXAMPLES
    assert len(augment_with(AugmentConfig(enabled=True, mlm=str(directory), n_per_example=2), EXAMPLES)) == 9
