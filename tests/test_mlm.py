"""Masked-LM distillation on raw text: corpus reading, masking, the mlm/mlm_kd terms, and a tiny end-to-end run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import save_tiny_mlm, tiny_tokenizer
from alembert.conf import CONF_DIR
from alembert.config import from_dict
from alembert.demo import DemoConfig, generate
from alembert.training import TrainConfig
from alembert.errors import AlembertError
from distill.losses import LOSSES
from distill.mlm import (DISTILBERT_MLM_TERMS, IGNORE, CorpusConfig, MaskingConfig, build_mlm_student, distil_mlm,
                         load_masked_lm, mask_tokens, masked_token_kl, mlm_loader, read_corpus)
from distill.terms.mlm import mlm_kd_loss, mlm_loss
from distill.models import Features, StudentConfig
from distill.recipes import RecipeConfig, TermConfig


def sentences(n: int) -> list[str]:
    return [row["sentence"] for row in generate(DemoConfig(train_size=n, dev_size=1, test_size=1, seed=3))["train"]][:n]


@pytest.fixture(scope="module")
def mlm_teacher_dir(tmp_path_factory):
    """A 4-layer BERT with an MLM head; a wide init range makes its predictions peaked, so there is something to learn."""
    return save_tiny_mlm(tmp_path_factory.mktemp("mlm-teacher"), layers=4)


def test_read_corpus_lines_and_columns(tmp_path):
    (tmp_path / "c.txt").write_text("first line\n\n  second line  \nthird\n")
    assert read_corpus(CorpusConfig(str(tmp_path / "c.txt"))) == ["first line", "second line", "third"]
    assert read_corpus(CorpusConfig(str(tmp_path / "c.txt"), max_lines=2)) == ["first line", "second line"]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["a b", "c d"])))
    assert read_corpus(CorpusConfig(str(tmp_path / "c.jsonl"), column="text")) == ["a b", "c d"]
    (tmp_path / "c.csv").write_text("id,text\n1,hello there\n2,general\n")
    assert read_corpus(CorpusConfig(str(tmp_path / "c.csv"), column="text")) == ["hello there", "general"]
    with pytest.raises(AlembertError, match="no column body"):
        read_corpus(CorpusConfig(str(tmp_path / "c.csv"), column="body"))
    with pytest.raises(AlembertError, match="not plain text"):
        read_corpus(CorpusConfig(str(tmp_path / "c.csv")))
    with pytest.raises(AlembertError, match="does not exist"):
        read_corpus(CorpusConfig(str(tmp_path / "missing.txt")))


def test_mask_tokens_rates_and_labels():
    ids = torch.randint(10, 50, (200, 50))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] and [SEP]
    masked, labels = mask_tokens(ids, maskable, mask_id=4, random_ids=torch.arange(60, 70), config=MaskingConfig(),
                                 generator=torch.Generator().manual_seed(0))
    chosen = labels != IGNORE
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original tokens
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # specials never chosen
    assert torch.equal(masked[~chosen], ids[~chosen])  # untouched elsewhere
    rate = chosen.float().sum() / maskable.sum()
    assert 0.13 < rate < 0.17
    as_mask = (masked[chosen] == 4).float().mean()
    as_random = ((masked[chosen] >= 60) & (masked[chosen] < 70)).float().mean()
    assert 0.75 < as_mask < 0.85 and 0.06 < as_random < 0.14  # the rest (about 10%) keep the token


def test_every_row_gets_a_masked_token():
    ids = torch.tensor([[2, 20, 3, 0], [2, 21, 22, 3]])
    maskable = torch.tensor([[False, True, False, False], [False, True, True, False]])
    config = MaskingConfig(probability=0.01)
    _, labels = mask_tokens(ids, maskable, mask_id=4, random_ids=torch.arange(5, 9), config=config,
                            generator=torch.Generator().manual_seed(1))
    assert ((labels != IGNORE) & maskable).sum(dim=1).tolist() == [1, 1]
    assert labels[0, 1] == 20


def test_loader_masks_deterministically(mlm_teacher_dir):
    tokenizer = tiny_tokenizer(mlm_teacher_dir / "tok")
    texts = sentences(8)
    first, second = (next(iter(mlm_loader(texts, tokenizer, batch_size=8, seed=5))) for _ in range(2))
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
    assert set(first) == {"input_ids", "attention_mask", "token_type_ids", "labels", "index"}
    assert (first["labels"][first["attention_mask"] == 0] == IGNORE).all()


def test_loss_terms_match_hand_computation():
    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    labels = torch.full((2, 3), IGNORE)
    labels[0, 1], labels[1, 2] = 5, 2
    student = Features(logits=s_logits, attention_mask=torch.ones(2, 3), labels=labels)
    teacher = Features(logits=t_logits, attention_mask=torch.ones(2, 3))
    rows = [(0, 1), (1, 2)]
    expected_ce = sum(-F.log_softmax(s_logits[i, j], -1)[labels[i, j]] for i, j in rows) / 2
    assert torch.allclose(mlm_loss(student, None), expected_ce)
    T = 2.0
    kl = 0.0
    for i, j in rows:
        p = F.softmax(t_logits[i, j] / T, -1)
        kl += (p * (p.log() - F.log_softmax(s_logits[i, j] / T, -1))).sum()
    assert torch.allclose(mlm_kd_loss(student, teacher, temperature=T), kl / 2 * T**2, atol=1e-6)
    assert LOSSES["mlm"].needs_teacher is False and LOSSES["mlm_kd"].needs_teacher is True
    nothing = Features(logits=s_logits, attention_mask=torch.ones(2, 3), labels=torch.full((2, 3), IGNORE))
    assert float(mlm_loss(nothing, None)) == 0.0  # a batch with nothing masked gives no NaN
    with pytest.raises(AlembertError, match="masked-LM logits"):
        mlm_loss(Features(logits=torch.randn(2, 2), attention_mask=torch.ones(2, 3), labels=torch.tensor([0, 1])), None)


def test_teacher_without_mlm_head_is_refused(tiny_dir):
    with pytest.raises(AlembertError, match="no trained masked-LM head"):
        load_masked_lm(str(tiny_dir("bert", 2)))
    with pytest.raises(AlembertError, match="no trained masked-LM head"):
        distil_mlm(str(tiny_dir("bert", 2)), StudentConfig(), ["some text"], TrainConfig())
    with pytest.raises(AlembertError, match="need a labelled task"):
        distil_mlm(str(tiny_dir("bert", 2)), StudentConfig(), ["some text"], TrainConfig(), terms=(TermConfig("hard", 1.0),))
    with pytest.raises(AlembertError, match="no corpus"):
        read_corpus(CorpusConfig())


def test_distil_mlm_brings_the_student_closer_to_the_teacher(mlm_teacher_dir, tmp_path):
    tokenizer = tiny_tokenizer(mlm_teacher_dir / "tok")
    teacher = load_masked_lm(str(mlm_teacher_dir))
    student = build_mlm_student(teacher, StudentConfig(num_layers=2))  # layers 0 and 2 of the teacher
    untrained = copy.deepcopy(student)
    texts = sentences(32)
    probe = mlm_loader(texts, tokenizer, batch_size=16, shuffle=False, seed=123)
    student, history = distil_mlm(str(mlm_teacher_dir), student, texts,
                                  TrainConfig(epochs=4, batch_size=8, lr=3e-3, warmup_ratio=0.0, seed=0),
                                  teacher=teacher, out_dir=tmp_path / "student")
    before, after = masked_token_kl(untrained, teacher, probe), masked_token_kl(student, teacher, probe)
    assert after < 0.5 * before, (before, after)
    assert {"mlm", "mlm_kd", "distilbert_cos"} <= set(history.epochs[0])
    reloaded = load_masked_lm(str(tmp_path / "student"))
    assert reloaded.config.num_hidden_layers == 2
    assert (tmp_path / "student" / "tokenizer_config.json").is_file()


def test_student_from_alternate_teacher_layers(mlm_teacher_dir):
    teacher = load_masked_lm(str(mlm_teacher_dir))
    student = build_mlm_student(teacher, StudentConfig(num_layers=2))
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for s, t in ((0, 0), (1, 2)):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s_state[key.format(s)], t_state[key.format(t)])
    assert torch.equal(s_state["cls.predictions.transform.dense.weight"], t_state["cls.predictions.transform.dense.weight"])


def test_recipe_file_lists_the_default_terms():
    path = CONF_DIR / "recipe" / "distilbert_mlm.yaml"
    recipe = from_dict(RecipeConfig, OmegaConf.to_container(OmegaConf.load(path)))
    listed = [(t.name, t.weight, {k: v for k, v in t.params.items() if k != "positions"}) for t in recipe.stages[0].terms]
    assert listed == [tuple(term) for term in DISTILBERT_MLM_TERMS]
