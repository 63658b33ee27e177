"""The model-family registry: each entry describes its family's real module layout, every stage asks it, and a
family it does not know is refused in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, GPT2Config

from alembert import families
from alembert.errors import AlembertError
from alembert.families import transformer_families
from alembert.families.base import FAMILIES, Family
from alembert.modeldir import check_family
from conftest import tiny_config, tiny_tokenizer
from distill.models import StudentConfig, build_student, value_projections

LAYERS = 4


@pytest.fixture(scope="module")
def vocab_size(tmp_path_factory) -> int:
    return len(tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def tiny(model_type: str, vocab_size: int, layers: int = LAYERS) -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(model_type, vocab_size, layers)).eval()


@pytest.mark.parametrize("model_type", transformer_families())
def test_every_entry_matches_its_familys_modules(model_type, vocab_size):
    model = tiny(model_type, vocab_size)
    entry = families.entry(model)
    assert getattr(model.config, entry.layer_count_key) == LAYERS
    assert hasattr(model.config, entry.ffn_key)
    if entry.layers is not None:
        layers = families.layer_list(model, "test")
        assert isinstance(layers, nn.ModuleList) and len(layers) == LAYERS
    if entry.parts is not None:
        for layer in families.prunable_layers(model, "test"):
            projections = ("qkv",) if entry.fused_qkv else ("query", "key", "value")  # ModernBERT: one fused Wqkv
            for role in (*projections, "attention_out", "ffn_in", "ffn_out"):
                assert isinstance(families.part(model, layer, role), nn.Linear), role
    # one value projection per distinct layer (ALBERT's single shared group has one)
    distinct = 1 if entry.layers is None else LAYERS
    assert len(value_projections(model)) == distinct


@pytest.mark.parametrize("model_type", [name for name in transformer_families() if FAMILIES[name].layers is not None])
def test_student_init_copies_exactly_the_named_teacher_layers(model_type, vocab_size):
    teacher = tiny(model_type, vocab_size)
    student = build_student(teacher, StudentConfig(num_layers=2, teacher_layers=(3, 1)))
    teacher_layers, student_layers = families.layer_list(teacher, "t"), families.layer_list(student, "s")
    for student_index, teacher_index in enumerate((3, 1)):
        mine, theirs = student_layers[student_index].state_dict(), teacher_layers[teacher_index].state_dict()
        missing = set(theirs) - set(mine)
        # ModernBERT's first layer has no attention norm (the embeddings are normed): only that may be left behind
        assert not missing or (model_type == "modernbert" and student_index == 0 and all(k.startswith("attn_norm.") for k in missing))
        assert set(mine) <= set(theirs) and all(torch.equal(mine[key], theirs[key]) for key in mine)
    embeddings = student.get_input_embeddings().weight, teacher.get_input_embeddings().weight
    assert torch.equal(*embeddings)


def test_positions_after_padding_only_for_roberta_families(vocab_size):
    assert families.entry(tiny("roberta", vocab_size)).position_offset(tiny_config("roberta", vocab_size)) == 1
    assert families.entry(tiny("bert", vocab_size)).position_offset(tiny_config("bert", vocab_size)) == 0


def test_a_second_entry_for_a_family_is_refused():
    with pytest.raises(AlembertError, match="model family 'bert' is registered twice"):
        FAMILIES.add("bert", Family("bert", layers="encoder.layer"))


def test_an_unknown_family_is_one_line_naming_the_known_ones(tmp_path):
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(AlembertError, match=r"'gpt2' model, which alembert does not support.*bert, electra"):
        check_family(str(tmp_path))


def test_a_pass_on_a_family_without_the_parts_names_the_supported_ones(vocab_size):
    with FAMILIES.replaced("electra", Family("electra", layers="encoder.layer")):  # as if ELECTRA had no parts named
        with pytest.raises(AlembertError, match="does not support the 'electra' model family; it supports: albert, bert"):
            families.prunable_layers(tiny("electra", vocab_size), "prune_heads")


def test_a_student_and_a_cut_model_keep_the_attention_pattern_of_their_layers(vocab_size):
    teacher = tiny("modernbert", vocab_size)
    assert teacher.config.layer_types == ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    student = build_student(teacher, StudentConfig(num_layers=2, teacher_layers=(1, 2)))
    assert student.config.layer_types == ["sliding_attention", "full_attention"]
    from compress.passes.layers import DropLayersConfig
    from compress.registry import apply

    cut = apply(tiny("modernbert", vocab_size), DropLayersConfig(strategy="explicit", layers=(0,)))
    assert cut.config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    assert cut.config.num_hidden_layers == 3
