"""Teachers with the tokenizers real checkpoints ship (byte-level BPE with <pad> = 1, SentencePiece Unigram for
XLM-R and DeBERTa-v3) go through fine-tune -> distil -> export -> predictor, and padding changes no logit."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import tiny_config
from tokenizers_real import real_tokenizer
from alembert.data import DataConfig, encode, load_task, loader
from alembert.demo import DemoConfig
from alembert.evaluate import predict_logits
from alembert.modeldir import load_model_dir, load_tokenizer
from alembert.training import TrainConfig
from distill.models import StudentConfig
from export.bundle import export_model
from export.config import ExportConfig, LatencyConfig, ParityConfig
from export.runtime import Predictor
from pipeline.run import FinetuneConfig, RunConfig, run

DATA = DataConfig(demo=DemoConfig(train_size=200, dev_size=40, test_size=40), max_length=32)
CASES = [("roberta", "byte-bpe"), ("xlm-roberta", "xlmr-unigram"), ("deberta-v2", "deberta-v3-unigram")]
TEXTS = ["a brilliant film with a superb cast", "boring", "the plot was dull but the acting was fine"]


@pytest.fixture(scope="module", params=CASES, ids=[f"{family}-{kind}" for family, kind in CASES])
def distilled(request, tmp_path_factory):
    family, kind = request.param
    work = tmp_path_factory.mktemp(f"real-{family}")
    tokenizer = real_tokenizer(kind, work / "teacher")
    config = tiny_config(family, len(tokenizer), 4)
    config.pad_token_id = tokenizer.pad_token_id  # 1 for RoBERTa's and XLM-R's tokenizers, as on the hub
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(work / "teacher")
    train = TrainConfig(epochs=2, batch_size=16, lr=1e-3)
    rows = run(RunConfig(teacher=str(work / "teacher"), data=DATA, student=StudentConfig(num_layers=2), train=train,
                         finetune=FinetuneConfig(mode="always", cache_dir=str(work / "cache"), train=train),
                         baseline=False, latency_seq_len=16), work / "run")
    return work, rows, tokenizer


def test_the_teacher_and_student_train_with_the_tokenizers_own_pad_id(distilled):
    work, rows, tokenizer = distilled
    student = load_model_dir(work / "run" / "student")
    assert student.config.pad_token_id == tokenizer.pad_token_id
    assert load_tokenizer(str(work / "run" / "student")).pad_token_id == tokenizer.pad_token_id
    assert {row["model"] for row in rows} == {"teacher", "student (KD)"} and all(0 <= row["accuracy"] <= 1 for row in rows)
    task = load_task(DATA)
    dev = loader(encode(task, "dev", tokenizer, DATA), tokenizer, batch_size=8, task=task.task)
    batched, _ = predict_logits(student, dev)  # padded to each batch's longest row with the tokenizer's pad id
    alone = torch.cat([predict_logits(student, loader(encode(task, "dev", tokenizer, DATA)[i:i + 1], tokenizer,
                                                      batch_size=1, task=task.task))[0] for i in range(8)])
    torch.testing.assert_close(batched[:8], alone, rtol=0, atol=1e-5)


def test_the_exported_student_matches_pytorch_and_the_predictor_agrees(distilled):
    work, _, tokenizer = distilled
    student = load_model_dir(work / "run" / "student")
    config = ExportConfig(variants=("optimized",), parity=ParityConfig(batch_sizes=(1, 3), max_lengths=(16, 32), samples=6),
                          latency=LatencyConfig(runs=2, warmup=1))
    bundle = export_model(student, tokenizer, work / "bundle", config)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert all(manifest["variants"][name]["max_abs_diff"] <= manifest["variants"][name]["tolerance"] for name in ("fp32", "optimized"))
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        inputs = {key: value for key, value in encoded.items() if key in ("input_ids", "attention_mask")}
        expected = student(**inputs).logits.argmax(-1).tolist()
    assert [answer["label"] for answer in Predictor(bundle).predict(TEXTS)] == [student.config.id2label[i] for i in expected]
