import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alembert.errors import AlembertError
from distill.models import StudentConfig, Teacher, build_student, default_teacher_layers
from alembert.modeldir import load_classifier, load_tokenizer, resolve_source, save_model
from tests.conftest import FAMILIES

LAYER_PREFIX = {"bert": "bert.encoder.layer", "roberta": "roberta.encoder.layer",
                "distilbert": "distilbert.transformer.layer", "electra": "electra.encoder.layer"}


def _batch(tokenizer):
    return dict(tokenizer(["the movie was good", "the plot felt very dull but the cast was brilliant"],
                          padding=True, return_tensors="pt"))


@pytest.mark.parametrize("family", FAMILIES)
def test_student_copies_exactly_the_chosen_teacher_layers(tiny_dir, family):
    teacher, _ = load_classifier(str(tiny_dir(family)))
    student = build_student(teacher, StudentConfig(num_layers=2, teacher_layers=(1, 3)))
    assert student.config.num_hidden_layers == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    prefix = LAYER_PREFIX[family]
    for student_layer, teacher_layer in enumerate((1, 3)):
        keys = [k for k in s_state if k.startswith(f"{prefix}.{student_layer}.")]
        assert keys
        for key in keys:
            source = key.replace(f"{prefix}.{student_layer}.", f"{prefix}.{teacher_layer}.")
            assert torch.equal(s_state[key], t_state[source]), key
    embeddings = [k for k in s_state if "embeddings" in k]
    assert embeddings and all(torch.equal(s_state[k], t_state[k]) for k in embeddings)


def test_default_layers_are_every_other():
    assert default_teacher_layers(6, 3) == (0, 2, 4)
    assert default_teacher_layers(12, 6) == (0, 2, 4, 6, 8, 10)
    assert default_teacher_layers(6, 2) == (0, 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_gives_identical_logits_and_labels(tiny_dir, tmp_path, family):
    source = str(tiny_dir(family))
    teacher, _ = load_classifier(source)
    tokenizer = load_tokenizer(source)
    student = build_student(teacher, StudentConfig(num_layers=2)).eval()
    save_model(student, tokenizer, tmp_path / "student")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "student")
    batch = _batch(loaded_tokenizer)
    assert torch.equal(student(**batch).logits, loaded(**batch).logits)
    assert loaded.config.id2label == {0: "negative", 1: "positive"}
    label_map = json.loads((tmp_path / "student" / "label_map.json").read_text())
    assert label_map["id2label"] == {"0": "negative", "1": "positive"}


def test_random_student_with_smaller_sizes(tiny_dir):
    teacher, _ = load_classifier(str(tiny_dir("bert")))
    student = build_student(teacher, StudentConfig(num_layers=1, init="random", hidden_size=16, num_heads=2, intermediate_size=24))
    assert student.config.hidden_size == 16 and student.config.intermediate_size == 24
    assert student.bert.encoder.layer[0].intermediate.dense.out_features == 24


def test_teacher_is_frozen_and_gives_hidden_states_and_attention_maps(tiny_dir):
    source = str(tiny_dir("bert"))
    model, _ = load_classifier(source, attentions=True)
    teacher = Teacher(model)
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    features = teacher.features(_batch(load_tokenizer(source)), hidden=True, attentions=True)
    assert len(features.hidden_states) == 5 and len(features.attentions) == 4
    assert features.attentions[0].shape[1] == 4  # heads
    assert features.logits.grad_fn is None


def test_init_from_teacher_rejects_missing_layers(tiny_dir):
    teacher, _ = load_classifier(str(tiny_dir("bert")))
    with pytest.raises(AlembertError, match=r"names layers \[7\].*0\.\.3"):
        build_student(teacher, StudentConfig(num_layers=2, teacher_layers=(0, 7)))


def test_init_from_teacher_rejects_a_different_hidden_size(tiny_dir):
    teacher, _ = load_classifier(str(tiny_dir("bert")))
    with pytest.raises(AlembertError, match="student.init=random"):
        build_student(teacher, StudentConfig(num_layers=2, hidden_size=16, num_heads=2))


def test_missing_teacher_path_is_one_clear_error():
    with pytest.raises(AlembertError, match="does not exist"):
        resolve_source("/no/such/teacher")


def test_unreachable_hub_id_names_the_fix():
    with pytest.raises(AlembertError, match="hub.*local directory"):
        load_tokenizer("alembert-test/no-such-model")


def test_packaged_minilm_loads_with_an_untrained_head():
    model, head_trained = load_classifier(resolve_source("minilm"), ("negative", "positive"))
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert not head_trained
    tokenizer = load_tokenizer(resolve_source("minilm"))
    assert tokenizer("hello world")["input_ids"][0] == tokenizer.cls_token_id
