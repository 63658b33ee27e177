"""The masked_lm task: corpus reading, dynamic masking, the kd/hard terms on MLM logits, its metrics, and a tiny
end-to-end run through the ordinary pipeline."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import AutoModelForMaskedLM

from conftest import save_tiny_mlm, tiny_tokenizer
from alembert.conf import CONF_DIR
from alembert.config import from_dict
from alembert.data import DataConfig, encode, load_task, loader
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from alembert.masking import IGNORE, MaskingConfig, mask_tokens
from alembert.modeldir import load_masked_lm
from alembert.tasks import task_named
from alembert.training import TrainConfig
from distill.losses import LOSSES
from distill.models import Features, StudentConfig, build_student
from distill.recipes import RecipeConfig, StageConfig, TermConfig
from pipeline.run import FinetuneConfig, RunConfig, run

MLM = task_named("masked_lm")


@pytest.fixture(scope="module")
def mlm_teacher_dir(tmp_path_factory):
    """A 4-layer BERT with an MLM head; a wide init range makes its predictions peaked, so there is something to learn."""
    return save_tiny_mlm(tmp_path_factory.mktemp("mlm-teacher"), layers=4)


def corpus_config(path, **changes) -> DataConfig:
    return DataConfig(**{"task": "files", "train": str(path), "task_type": "masked_lm", "text_column": "text",
                         "max_length": 24, **changes})


def test_a_corpus_is_read_from_lines_or_a_text_column(tmp_path):
    (tmp_path / "c.txt").write_text("first line\n\n  second line  \nthird\n")
    texts = [e.text for e in load_task(corpus_config(tmp_path / "c.txt")).splits["train"]]
    assert texts == ["first line", "second line", "third"]
    assert len(load_task(corpus_config(tmp_path / "c.txt", max_train_examples=2)).splits["train"]) == 2
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["a b", "c d"])))
    assert [e.text for e in load_task(corpus_config(tmp_path / "c.jsonl")).splits["train"]] == ["a b", "c d"]
    (tmp_path / "c.csv").write_text("id,body\n1,hello there\n2,general\n")
    with pytest.raises(AlembertError, match="no column text"):
        load_task(corpus_config(tmp_path / "c.csv"))
    assert [e.text for e in load_task(corpus_config(tmp_path / "c.csv", text_column="body")).splits["train"]] == ["hello there", "general"]
    with pytest.raises(AlembertError, match="does not exist"):
        load_task(corpus_config(tmp_path / "missing.txt"))
    with pytest.raises(AlembertError, match="data.task=files"):
        load_task(DataConfig(train=str(tmp_path / "c.txt"), task_type="masked_lm"))  # the demo would ignore the file


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
    _, labels = mask_tokens(ids, maskable, mask_id=4, random_ids=torch.arange(5, 9), config=MaskingConfig(probability=0.01),
                            generator=torch.Generator().manual_seed(1))
    assert ((labels != IGNORE) & maskable).sum(dim=1).tolist() == [1, 1]
    assert labels[0, 1] == 20


def test_bad_masking_ratios_fail_in_one_line():
    with pytest.raises(AlembertError, match="do not fit"):
        MaskingConfig(mask_ratio=0.8, random_ratio=0.3)


def test_batches_mask_the_same_way_twice_and_afresh_each_epoch(mlm_teacher_dir):
    tokenizer = tiny_tokenizer(mlm_teacher_dir / "tok")
    data = load_task(DataConfig(task_type="masked_lm", demo=DemoConfig(train_size=8, dev_size=2, test_size=2)))
    rows = encode(data, "train", tokenizer, data_config := DataConfig(max_length=24))
    train = loader(rows, tokenizer, batch_size=8, task=MLM, seed=5)  # one order: the masks are what could differ
    first, second = next(iter(train)), next(iter(train))
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
    assert set(first) == {"input_ids", "attention_mask", "token_type_ids", "labels", "index"}
    assert (first["labels"][first["attention_mask"] == 0] == IGNORE).all()
    train.dataset.set_epoch(1)
    assert not torch.equal(next(iter(train))["labels"], first["labels"])
    assert data_config.masking == MaskingConfig()


def test_kd_and_hard_terms_on_mlm_logits_match_hand_computation():
    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    labels = torch.full((2, 3), IGNORE)
    labels[0, 1], labels[1, 2] = 5, 2
    student = Features(logits=s_logits, attention_mask=torch.ones(2, 3), labels=labels, task=MLM)
    teacher = Features(logits=t_logits, attention_mask=torch.ones(2, 3), task=MLM)
    rows = [(0, 1), (1, 2)]
    expected_ce = sum(-F.log_softmax(s_logits[i, j], -1)[labels[i, j]] for i, j in rows) / 2
    assert torch.allclose(LOSSES["hard"].fn(student, None), expected_ce)
    T = 2.0
    kl = 0.0
    for i, j in rows:
        p = F.softmax(t_logits[i, j] / T, -1)
        kl += (p * (p.log() - F.log_softmax(s_logits[i, j] / T, -1))).sum()
    assert torch.allclose(LOSSES["kd"].fn(student, teacher, temperature=T), kl / 2 * T**2, atol=1e-6)
    nothing = Features(logits=s_logits, attention_mask=torch.ones(2, 3), labels=torch.full((2, 3), IGNORE), task=MLM)
    assert float(LOSSES["hard"].fn(nothing, None)) == 0.0  # a batch with nothing masked gives no NaN
    assert float(LOSSES["kd"].fn(nothing, teacher)) == 0.0


def test_metrics_are_masked_token_accuracy_and_perplexity_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[0, IGNORE], [1, IGNORE]])  # right at (0, 0), wrong at (1, 0)
    kept, same = MLM.eval_outputs(logits, labels)
    assert kept.shape == (2, 2, 2) and torch.equal(same, labels)
    log_p = [F.log_softmax(logits[0, 0], -1)[0], F.log_softmax(logits[1, 0], -1)[1]]
    found = MLM.metrics(kept, labels)
    assert found["accuracy"] == 0.5
    assert found["perplexity"] == pytest.approx(math.exp(-(log_p[0] + log_p[1]) / 2))
    other, _ = MLM.eval_outputs(torch.tensor([[[2.0, 0, 0], [0, 0, 0]], [[0, 0, 2.0], [0, 0, 0]]]), labels)
    assert MLM.agreement(kept, other, labels) == {"agreement": 1.0}  # both predict 0 and 2 at the masked tokens


def test_a_teacher_without_an_mlm_head_is_refused(tiny_dir):
    with pytest.raises(AlembertError, match="no trained masked-LM head"):
        load_masked_lm(str(tiny_dir("bert", 2)))


def test_student_from_alternate_teacher_layers_keeps_the_mlm_head(mlm_teacher_dir):
    teacher = load_masked_lm(str(mlm_teacher_dir))
    student = build_student(teacher, StudentConfig(num_layers=2))
    assert isinstance(student, type(teacher))
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for s, t in ((0, 0), (1, 2)):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s_state[key.format(s)], t_state[key.format(t)])
    assert torch.equal(s_state["cls.predictions.transform.dense.weight"], t_state["cls.predictions.transform.dense.weight"])


def test_recipe_file_lists_distilberts_terms():
    path = CONF_DIR / "recipe" / "distilbert_mlm.yaml"
    recipe = from_dict(RecipeConfig, OmegaConf.to_container(OmegaConf.load(path)))
    listed = [(t.name, t.weight, dict(t.params)) for t in recipe.stages[0].terms]
    assert listed == [("kd", 5.0, {"temperature": 2.0}), ("hard", 2.0, {}),
                      ("distilbert_cos", 1.0, {"layers": "last_k", "k": 1})]


def masked_kl(student, teacher, batches) -> float:
    """KL(teacher || student) over the masked tokens, by hand from the full logits."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            chosen = batch["labels"] != IGNORE
            log_s = F.log_softmax(student(**inputs).logits[chosen], -1)
            log_t = F.log_softmax(teacher(**inputs).logits[chosen], -1)
            total += float((log_t.exp() * (log_t - log_s)).sum())
            count += int(chosen.sum())
    return total / count


def test_a_masked_lm_run_distils_through_the_ordinary_pipeline(mlm_teacher_dir, tmp_path):
    data = DataConfig(task_type="masked_lm", max_length=24, demo=DemoConfig(train_size=64, dev_size=16, test_size=32))
    recipe = RecipeConfig(stages=(StageConfig(terms=(TermConfig("kd", 5.0, {"temperature": 2.0}), TermConfig("hard", 2.0),
                                                     TermConfig("distilbert_cos", 1.0, {"layers": "last_k", "k": 1}))),))
    config = RunConfig(teacher=str(mlm_teacher_dir), data=data, recipe=recipe, student=StudentConfig(num_layers=2),
                       train=TrainConfig(epochs=4, batch_size=8, lr=3e-3, warmup_ratio=0.0, seed=0),
                       finetune=FinetuneConfig(mode="never"), baseline=True, latency_seq_len=8)
    rows = run(config, tmp_path / "out")
    assert [row["model"] for row in rows] == ["teacher", "student (KD)", "student (no KD)"]
    assert rows[0]["agreement"] == 1.0 and rows[1]["agreement"] > rows[2]["agreement"]
    teacher = load_masked_lm(str(mlm_teacher_dir)).eval()
    untrained = build_student(teacher, StudentConfig(num_layers=2)).eval()
    student = AutoModelForMaskedLM.from_pretrained(tmp_path / "out" / "student").eval()
    tokenizer = tiny_tokenizer(mlm_teacher_dir / "tok")
    probe = loader(encode(load_task(data), "test", tokenizer, data), tokenizer, batch_size=16, task=MLM, seed=123)
    before, after = masked_kl(untrained, teacher, probe), masked_kl(student, teacher, probe)
    assert after < 0.5 * before, (before, after)
    assert student.config.problem_type == "masked_lm" and (tmp_path / "out" / "summary.json").is_file()


def test_an_mlm_student_is_neither_compressed_nor_exported(mlm_teacher_dir, tmp_path):
    from compress.pipeline import run_pipeline
    from export.bundle import export_model
    from export.config import ExportConfig

    model, tokenizer = load_masked_lm(str(mlm_teacher_dir)), tiny_tokenizer(tmp_path / "tok")
    with pytest.raises(AlembertError, match="compression does not take a masked_lm model"):
        run_pipeline(model, tokenizer, ())
    with pytest.raises(AlembertError, match="the export does not take a masked_lm model"):
        export_model(model, tokenizer, tmp_path / "bundle", ExportConfig())
    assert not (tmp_path / "bundle").exists()
