"""Layer-wise distillation terms against hand computations on tiny fixed tensors, plus real tiny BERTs for MiniLM."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from alembert.errors import AlembertError
from distill.terms.layerwise import HiddenProjection, layer_map, split_heads, value_relation
from alembert.tasks import task_named
from distill.losses import LOSSES, Objective, Term
from distill.models import Features

MASK = torch.tensor([[1, 1, 0]])  # one sequence, two real tokens and one pad


def feats(hidden=None, attentions=None, values=None, logits=None, mask=MASK, task="classification") -> Features:
    return Features(logits=torch.zeros(mask.shape[0], 2) if logits is None else logits, attention_mask=mask,
                    hidden_states=hidden, attentions=attentions, values=values, task=task_named(task))


def loss(name: str, student: Features, teacher: Features, **params) -> float:
    return float(LOSSES[name].fn(student, teacher, mask=student.attention_mask, **params).detach())


# ---------------------------------------------------------------- layer mapping

@pytest.mark.parametrize("kind, m, n, extra, expected", [
    ("uniform", 3, 12, {}, ((1, 4), (2, 8), (3, 12))),
    ("uniform", 4, 6, {}, ((1, 1), (2, 3), (3, 4), (4, 6))),
    ("uniform", 4, 4, {}, ((1, 1), (2, 2), (3, 3), (4, 4))),
    ("last_k", 2, 4, {}, ((2, 4),)),
    ("last_k", 3, 6, {"k": 2}, ((2, 5), (3, 6))),
    ("explicit", 3, 12, {"explicit": [2, 7, 12]}, ((1, 2), (2, 7), (3, 12))),
    ("explicit", 3, 12, {"explicit": [[3, 12], [1, 6]]}, ((3, 12), (1, 6))),
])
def test_layer_map(kind, m, n, extra, expected):
    assert layer_map(kind, m, n, **extra) == expected


@pytest.mark.parametrize("kind, m, n, extra, words", [
    ("explicit", 2, 4, {"explicit": [[3, 4]]}, ["student layer 3", "1..2"]),
    ("explicit", 2, 4, {"explicit": [1, 5]}, ["teacher layer 5", "1..4"]),
    ("explicit", 2, 4, {"explicit": [0, 4]}, ["teacher layer 0", "1..4"]),
    ("explicit", 2, 4, {"explicit": None}, ["non-empty"]),
    ("explicit", 2, 4, {"explicit": [[1, "a"]]}, ["cannot read"]),
    ("last_k", 2, 4, {"k": 3}, ["k=3", "between 1 and 2"]),
    ("uniform", 6, 4, {}, ["no more layers"]),
    ("every_other", 2, 4, {}, ["unknown layer mapping"]),
])
def test_layer_map_errors_name_the_problem(kind, m, n, extra, words):
    with pytest.raises(AlembertError) as err:
        layer_map(kind, m, n, **extra)
    assert all(word in str(err.value) for word in words), str(err.value)
    assert "\n" not in str(err.value)


def test_loss_validates_mapping_against_both_models():
    hidden = (torch.zeros(1, 3, 2),) * 3  # two layers
    with pytest.raises(AlembertError, match="student layer 3"):
        loss("tinybert_hidden", feats(hidden), feats(hidden), layers=[[3, 1]])


# ---------------------------------------------------------------- DistilBERT cosine

def test_distilbert_cosine_by_hand_and_padding_ignored():
    student_last = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    teacher_last = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [-3.0, 2.0]]])
    junk = torch.full((1, 3, 2), 7.0)  # the embedding output: not used by default (last <-> last)
    value = loss("distilbert_cos", feats((junk, student_last)), feats((junk, teacher_last)))
    # token 0: cos = 1 -> 0; token 1: cos = 1/sqrt(2); the pad is excluded; mean over 2 real tokens
    assert value == pytest.approx((1 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    moved = student_last.clone()
    moved[0, 2] = torch.tensor([-9.0, 1.0])
    assert loss("distilbert_cos", feats((junk, moved)), feats((junk, teacher_last))) == pytest.approx(value, abs=1e-7)


def test_distilbert_cosine_needs_equal_sizes_and_hidden_states():
    with pytest.raises(AlembertError, match="equal hidden sizes"):
        loss("distilbert_cos", feats((torch.ones(1, 3, 2),) * 2), feats((torch.ones(1, 3, 4),) * 2))
    with pytest.raises(AlembertError, match="needs the student's hidden_states"):
        loss("distilbert_cos", feats(None), feats((torch.ones(1, 3, 2),) * 2))


# ---------------------------------------------------------------- TinyBERT

def test_tinybert_hidden_uniform_mapping_picks_the_right_teacher_layers():
    zeros = torch.zeros(1, 3, 2)
    student = (zeros, zeros, zeros)  # embeddings + 2 layers
    # uniform 2 -> 4 maps to teacher layers 2 and 4; layers 1 and 3 are junk that must not be read
    layer2 = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [50.0, 50.0]]])  # per-token mean sq: 2.5, 0.5, pad excluded
    layer4 = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [-50.0, 0.0]]])  # 2.0, 0.0
    junk = torch.full((1, 3, 2), 100.0)
    teacher = (junk, junk, layer2, junk, layer4)
    value = loss("tinybert_hidden", feats(student), feats(teacher))
    assert value == pytest.approx(((2.5 + 0.5) / 2 + (2.0 + 0.0) / 2) / 2)  # mean of the two layer losses


def test_tinybert_hidden_projection_by_hand_and_gradients_flow():
    projection = HiddenProjection(2, 3, n_layers=1)
    with torch.no_grad():
        for linear in projection.maps:
            linear.bias.zero_()
        projection.maps[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # [a, b] -> [a, b, a+b]
    student_layer = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [4.0, 4.0]]], requires_grad=True)
    teacher_layer = torch.tensor([[[1.0, 2.0, 4.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    student = feats((torch.zeros(1, 3, 2), student_layer))
    teacher = feats((torch.zeros(1, 3, 3), teacher_layer))
    value = LOSSES["tinybert_hidden"].fn(student, teacher, mask=MASK, projection=projection)
    # token 0: [1,2,3] vs [1,2,4] -> 1/3; token 1: exact -> 0; mean over real tokens
    assert float(value.detach()) == pytest.approx(1 / 6)
    value.backward()
    assert projection.maps[1].weight.grad.abs().sum() > 0
    assert projection.maps[0].weight.grad is None  # the embedding slot is not used by this term
    assert student_layer.grad[0, 0].abs().sum() > 0 and student_layer.grad[0, 2].abs().sum() == 0  # pad: no grad


def test_tinybert_hidden_without_projection_says_how_to_build_one():
    with pytest.raises(AlembertError, match=r"projection=HiddenProjection\(2, 3"):
        loss("tinybert_hidden", feats((torch.ones(1, 3, 2),) * 2), feats((torch.ones(1, 3, 3),) * 2))
    with pytest.raises(AlembertError, match="hidden size 4"):
        loss("tinybert_hidden", feats((torch.ones(1, 3, 2),) * 2), feats((torch.ones(1, 3, 3),) * 2),
             projection=HiddenProjection(4, 3, 1))


def test_tinybert_embedding_uses_slot_zero_and_shared_projection_has_one_map():
    student_emb = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]]])
    teacher_emb = torch.tensor([[[1.0, 3.0], [2.0, 2.0], [0.0, 0.0]]])
    # per token mean sq: (0 + 4)/2 = 2, (0 + 4)/2 = 2; pad excluded
    assert loss("tinybert_embedding", feats((student_emb,)), feats((teacher_emb,))) == pytest.approx(2.0)
    shared = HiddenProjection(2, 2, n_layers=4, shared=True)
    assert len(shared.maps) == 1 and len(HiddenProjection(2, 2, n_layers=4).maps) == 5
    with torch.no_grad():
        shared.maps[0].weight.copy_(torch.eye(2) * 2)
        shared.maps[0].bias.zero_()
    # doubled student [2,2],[4,0] vs teacher: (1 + 1)/2 = 1, (4 + 4)/2 = 4
    value = loss("tinybert_embedding", feats((student_emb,)), feats((teacher_emb,)), projection=shared)
    assert value == pytest.approx(2.5)


def uniform_maps(heads=2, seq=3):
    return torch.full((1, heads, seq, seq), 1.0 / seq)


def test_tinybert_attention_mse_by_hand_over_real_entries_only():
    teacher = uniform_maps()
    student = teacher.clone()
    student[0, 0, 0, :2] += torch.tensor([0.1, -0.1])
    student[0, 1, 0, :2] += torch.tensor([0.2, -0.2])
    expected = (0.01 + 0.01 + 0.04 + 0.04) / 8  # 2 heads x 2 real queries x 2 real keys
    assert loss("tinybert_attention", feats(attentions=(student,)), feats(attentions=(teacher,))) == pytest.approx(expected)
    student[0, :, 2, :] = 5.0  # the pad's query row
    student[0, :, :, 2] = -5.0  # the pad's key column
    assert loss("tinybert_attention", feats(attentions=(student,)), feats(attentions=(teacher,))) == pytest.approx(expected)


def test_tinybert_attention_log_probs_and_head_mismatch():
    teacher = torch.full((1, 1, 3, 3), 0.5)
    student = teacher.clone()
    student[0, 0, 1, 1] = 0.25
    value = loss("tinybert_attention", feats(attentions=(student,)), feats(attentions=(teacher,)), space="log_probs")
    assert value == pytest.approx(math.log(2) ** 2 / 4)  # one of 4 real entries off by ln 2
    with pytest.raises(AlembertError, match="same number of heads"):
        loss("tinybert_attention", feats(attentions=(uniform_maps(heads=2),)), feats(attentions=(uniform_maps(heads=4),)))
    with pytest.raises(AlembertError, match="space"):
        loss("tinybert_attention", feats(attentions=(teacher,)), feats(attentions=(teacher,)), space="scores")


def test_tinybert_prediction_soft_cross_entropy_by_hand():
    student = feats(logits=torch.tensor([[math.log(3.0), 0.0]]))
    teacher = feats(logits=torch.tensor([[0.0, 0.0]]))
    # -(0.5 ln 0.75 + 0.5 ln 0.25)
    expected = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    assert loss("tinybert_pred", student, teacher) == pytest.approx(expected)
    # soft CE = KL + teacher entropy (ln 2 here): same gradients as kd
    assert loss("tinybert_pred", student, teacher) - loss("kd", student, teacher) == pytest.approx(math.log(2))
    regression = loss("tinybert_pred", feats(logits=torch.tensor([[1.0], [3.0]]), mask=torch.ones(2, 3), task="regression"),
                      feats(logits=torch.tensor([[0.0], [1.0]]), mask=torch.ones(2, 3), task="regression"))
    assert regression == pytest.approx((1 + 4) / 2)


# ---------------------------------------------------------------- MiniLM

def test_minilm_attention_kl_by_hand_renormalised_over_real_keys():
    teacher = torch.zeros(1, 2, 3, 3)
    teacher[..., :2] = 0.5
    student = teacher.clone()
    student[0, 0, 0] = torch.tensor([0.2, 0.6, 0.2])  # padded key mass is dropped: [0.25, 0.75] over real keys
    student[0, 1, 2] = torch.tensor([1.0, 0.0, 0.0])  # the pad's query row: excluded
    # head 0 query 0: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75); 3 other real rows are equal; mean over 4 rows
    expected = (0.5 * math.log(2) + 0.5 * math.log(2 / 3)) / 4
    assert loss("minilm_attention", feats(attentions=(student,)), feats(attentions=(teacher,))) == pytest.approx(expected)
    with pytest.raises(AlembertError, match="relation_heads"):
        loss("minilm_attention", feats(attentions=(uniform_maps(heads=2),)), feats(attentions=(uniform_maps(heads=4),)))


def test_value_relation_kl_by_hand():
    teacher_values = torch.tensor([1.0, 0.0, 9.0]).view(1, 1, 3, 1)  # one head, head_dim 1
    student_values = torch.tensor([0.0, 0.0, 9.0]).view(1, 1, 3, 1)  # relations all uniform over real keys
    # teacher row 0: softmax([1, 0]); row 1: softmax([0, 0]) = student's; the pad key (9) is excluded
    p = math.e / (math.e + 1)
    row0 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert torch.allclose(value_relation(teacher_values, MASK)[0, 0, 0], torch.tensor([p, 1 - p, 0.0]))
    value = loss("minilm_value", feats(values=(student_values,)), feats(values=(teacher_values,)))
    assert value == pytest.approx(row0 / 2)


def test_value_relation_heads_compare_different_head_counts():
    # student: 2 heads of dim 1; teacher: 1 head of dim 2 holding the same concatenated vectors
    student_values = torch.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, 3.0]]).view(1, 2, 3, 1)
    teacher_values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]).view(1, 1, 3, 2)
    relation = value_relation(student_values, MASK, relation_heads=1)
    s = 1 / math.sqrt(2)  # token 0 . token 0 / sqrt(2); token 0 . token 1 = 0
    assert torch.allclose(relation[0, 0, 0, :2], torch.softmax(torch.tensor([s, 0.0]), -1))
    same = loss("minilm_value", feats(values=(student_values,)), feats(values=(teacher_values,)), relation_heads=1)
    assert same == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(AlembertError, match="set relation_heads"):
        loss("minilm_value", feats(values=(student_values,)), feats(values=(teacher_values,)))
    with pytest.raises(AlembertError, match="does not divide"):
        loss("minilm_value", feats(values=(student_values,)), feats(values=(teacher_values,)), relation_heads=3)


# ---------------------------------------------------------------- properties of every layer-wise term

def random_features(seed: int, hidden: int = 8, heads: int = 2, layers: int = 2) -> Features:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    key_mask = torch.where(mask[:, None, None, :] == 1, 0.0, float("-inf"))
    maps = tuple((torch.randn(2, heads, 4, 4, generator=generator) + key_mask).softmax(-1) for _ in range(layers))
    return Features(logits=torch.randn(2, 2, generator=generator), attention_mask=mask,
                    hidden_states=tuple(torch.randn(2, 4, hidden, generator=generator) for _ in range(layers + 1)),
                    attentions=maps, values=tuple(torch.randn(2, heads, 4, 3, generator=generator) for _ in range(layers)))


LAYERWISE = ("distilbert_cos", "tinybert_embedding", "tinybert_hidden", "tinybert_attention", "minilm_attention",
             "minilm_value")


@pytest.mark.parametrize("name", LAYERWISE)
def test_zero_when_student_equals_teacher_and_positive_otherwise(name):
    same = random_features(0)
    assert loss(name, same, same) == pytest.approx(0.0, abs=1e-6)
    assert loss(name, random_features(1), same) > 1e-3


def scramble_padding(features: Features) -> Features:
    """The same features with everything at padded positions replaced by large junk."""
    pad = features.attention_mask == 0
    hidden = tuple(h.masked_fill(pad[:, :, None], 33.0) for h in features.hidden_states)
    maps = tuple(a.masked_fill(pad[:, None, :, None], 0.7).masked_fill(pad[:, None, None, :], 0.4)
                 for a in features.attentions)
    values = tuple(v.masked_fill(pad[:, None, :, None], -21.0) for v in features.values)
    return Features(features.logits, features.attention_mask, hidden, maps, values)


@pytest.mark.parametrize("name", LAYERWISE)
def test_padding_positions_cannot_change_the_loss(name):
    student, teacher = random_features(1), random_features(2)
    expected = loss(name, student, teacher)
    assert loss(name, scramble_padding(student), scramble_padding(teacher)) == pytest.approx(expected, rel=1e-5)


def test_objective_flags_follow_the_registered_terms():
    """What an objective reads is derived from its terms' registration flags (zero-weight terms excluded)."""
    objective = Objective((Term("hard", 0.5), Term("minilm_attention", 1.0), Term("tinybert_hidden", 0.0)))
    assert (objective.needs_teacher, objective.needs_attentions, objective.needs_hidden) == (True, True, False)
    values = Objective((Term("minilm_value", 1.0), Term("distilbert_cos", 0.0)))
    assert values.needs_values and not values.needs_hidden
    assert not Objective((Term("hard", 1.0),)).needs_teacher
    assert LOSSES["tinybert_hidden"].projected and not LOSSES["minilm_attention"].projected
    assert LOSSES["kd"].soft_target_temperature == 1.0 and LOSSES["hard"].soft_target_temperature is None
    with pytest.raises(AlembertError, match="unknown loss term"):
        Objective((Term("nope", 1.0),))


# ---------------------------------------------------------------- MiniLM between real tiny BERTs of different widths

def tiny_bert(hidden: int, heads: int, layers: int) -> BertForSequenceClassification:
    torch.manual_seed(hidden + heads + layers)
    config = BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=16, num_labels=2,
                        attn_implementation="eager")  # sdpa returns no attention maps
    return BertForSequenceClassification(config).eval()  # eval: no attention dropout


def run_with_values(model: BertForSequenceClassification, batch: dict) -> Features:
    captured = []
    hooks = [layer.attention.self.value.register_forward_hook(lambda module, args, out: captured.append(out))
             for layer in model.bert.encoder.layer]
    try:
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()
    heads = model.config.num_attention_heads
    return Features(out.logits, batch["attention_mask"], out.hidden_states, out.attentions,
                    tuple(split_heads(v, heads) for v in captured))


BATCH = {"input_ids": torch.tensor([[2, 7, 9, 11, 3], [2, 8, 3, 0, 0]]),
         "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}


def test_minilm_between_hidden_32_and_hidden_16_models_without_projection():
    teacher_model, student_model = tiny_bert(32, 4, layers=4), tiny_bert(16, 4, layers=2)
    with torch.no_grad():
        teacher = run_with_values(teacher_model, BATCH)
    student = run_with_values(student_model, BATCH)
    assert teacher.values[-1].shape == (2, 4, 5, 8) and student.values[-1].shape == (2, 4, 5, 4)
    total = 0.0
    for name in ("minilm_attention", "minilm_value"):
        value = LOSSES[name].fn(student, teacher, mask=student.attention_mask)
        assert torch.isfinite(value) and value > 0
        assert float(LOSSES[name].fn(teacher, teacher, mask=teacher.attention_mask)) == pytest.approx(0.0, abs=1e-6)
        total = total + value
    total.backward()
    last = student_model.bert.encoder.layer[-1].attention.self
    assert last.value.weight.grad.abs().sum() > 0 and last.query.weight.grad.abs().sum() > 0
    # padding really excluded on a real model: other tokens at the pads give the same loss
    repadded = {**BATCH, "input_ids": BATCH["input_ids"].masked_fill(BATCH["attention_mask"] == 0, 17)}
    with torch.no_grad():
        before = LOSSES["minilm_value"].fn(run_with_values(student_model, BATCH), teacher, mask=BATCH["attention_mask"])
        after = LOSSES["minilm_value"].fn(run_with_values(student_model, repadded),
                                          run_with_values(teacher_model, repadded), mask=BATCH["attention_mask"])
    assert float(after) == pytest.approx(float(before), rel=1e-5)


def test_minilm_value_relation_heads_across_head_counts_on_real_models():
    teacher_model, student_model = tiny_bert(32, 4, layers=2), tiny_bert(16, 2, layers=2)
    with torch.no_grad():
        teacher, student = run_with_values(teacher_model, BATCH), run_with_values(student_model, BATCH)
    with pytest.raises(AlembertError, match="relation_heads"):
        LOSSES["minilm_value"].fn(student, teacher, mask=student.attention_mask)
    value = LOSSES["minilm_value"].fn(student, teacher, mask=student.attention_mask, relation_heads=2)
    assert torch.isfinite(value) and value > 0
