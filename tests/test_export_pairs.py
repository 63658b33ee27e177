"""Sentence pairs through export and deployment: the checks encode both texts, the bundle predicts what PyTorch
predicts on pairs, and the predictor and JSONL CLI take pairs with a per-item error for a malformed one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alembert.data import DataConfig
from alembert.demo import DemoConfig, generate
from export.bundle import build_bundle, parity_set
from export.config import ExportConfig, LatencyConfig, ParityConfig
from export.feeds import load_task_feeds
from export.predict import predict_lines, read_jsonl
from export.runtime import Predictor
from tests.conftest import LABELS
from tests.test_export_runtime import run_predict

FAST = dict(parity=ParityConfig(batch_sizes=(1, 3), max_lengths=(8, 40), samples=12),
            latency=LatencyConfig(runs=2, warmup=1, seq_len=16))


def write_pairs(path: Path, rows: list[dict]) -> list[tuple[str, str, str]]:
    """Each sentence paired with the next one, labelled by the first; as a TSV with a header."""
    pairs = [(row["sentence"], rows[(i + 1) % len(rows)]["sentence"], row["label"]) for i, row in enumerate(rows)]
    path.write_text("sentence\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\t{label}\n" for a, b, label in pairs))
    return pairs


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory) -> tuple[DataConfig, list[tuple[str, str, str]]]:
    directory = tmp_path_factory.mktemp("pairs")
    splits = generate(DemoConfig(train_size=40, dev_size=48, test_size=1))
    write_pairs(directory / "train.tsv", splits["train"])
    dev = write_pairs(directory / "dev.tsv", splits["dev"])
    config = DataConfig(task="files", train=str(directory / "train.tsv"), dev=str(directory / "dev.tsv"),
                        text_pair_column="sentence2", max_length=40)
    return config, dev


@pytest.fixture(scope="module")
def pair_bundle(tiny_dir, pair_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pair-bundle") / "bundle"
    config = ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(out), variants=("optimized", "int8_dynamic"),
                          max_length=40, data=pair_data[0], **FAST)
    return build_bundle(config)


def torch_pairs(model_dir: Path, pairs) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    encoded = tokenizer([a for a, *_ in pairs], [b for _, b, *_ in pairs], padding=True, truncation=True, max_length=40,
                        return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**encoded).logits, -1).numpy()


def test_calibration_parity_and_metric_batches_hold_both_texts(tiny_dir, pair_data):
    model_dir = tiny_dir("bert", layers=2)
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    config = ExportConfig(variants=(), max_length=40, data=pair_data[0], **FAST)
    feeds = load_task_feeds(config, tokenizer, LABELS, model)
    first = feeds.metric_batches[0].feed
    a, b, _ = pair_data[1][0]
    expected = tokenizer(a, b)["input_ids"]
    assert first["input_ids"][0, : len(expected)].tolist() == expected  # the pair, as training encodes it
    assert (first["token_type_ids"] == 1).any() and all((f["token_type_ids"] == 1).any() for f in feeds.calibration)
    assert feeds.metric_batches[0].labels.tolist()[:3] == [LABELS.index(label) for *_, label in pair_data[1][:3]]
    parity = parity_set(model, tokenizer, ("input_ids", "token_type_ids", "attention_mask"), config, feeds)
    lengths, sizes = len(set(FAST["parity"].max_lengths)), len(FAST["parity"].batch_sizes)
    assert len(parity.feeds) == lengths * (sizes + 1)  # each size at each length, and a batch with a long text
    assert all((feed["token_type_ids"] == 1).any() for feed in parity.feeds)  # every batch holds pairs
    assert max(feed["input_ids"].shape[1] for feed in parity.feeds) == 40  # the long text fills the longest length


def test_the_dev_metric_is_pytorchs_accuracy_on_the_pairs(pair_bundle, pair_data, tiny_dir):
    manifest = json.loads((pair_bundle / "manifest.json").read_text())
    pairs = pair_data[1]
    predicted = torch_pairs(tiny_dir("bert", layers=2), pairs).argmax(-1)
    accuracy = float(np.mean(predicted == [LABELS.index(label) for *_, label in pairs]))
    assert manifest["pytorch"]["metric_name"] == "accuracy" and manifest["pytorch"]["metric"] == pytest.approx(accuracy)
    assert manifest["variants"]["fp32"]["metric"] == pytest.approx(accuracy) and manifest["data"]["metric_examples"] == 48


@pytest.mark.parametrize("variant", ["fp32", "optimized"])
def test_the_bundle_predicts_pytorchs_labels_on_pairs(pair_bundle, pair_data, tiny_dir, variant):
    pairs = [(a, b) for a, b, _ in pair_data[1][:12]] + [("a fine film", ""), ("", "")]
    expected = torch_pairs(tiny_dir("bert", layers=2), pairs)
    results = Predictor(pair_bundle, variant).predict(pairs)
    got = np.array([[r["probabilities"][label] for label in LABELS] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [r["label"] for r in results] == [LABELS[i] for i in expected.argmax(-1)]


def test_jsonl_text_pair_lines_are_pairs_and_a_malformed_one_errs_alone(pair_bundle):
    predictor = Predictor(pair_bundle)
    a, b = "the acting was superb", "the plot was dull"
    lines = [json.dumps({"id": 1, "text": a, "text_pair": b}), json.dumps({"id": 2, "text": a, "text_pair": 5}),
             json.dumps({"id": 3, "text_pair": b}), json.dumps({"id": 4, "text": [a, b]}), json.dumps({"id": 5, "text": a}),
             json.dumps({"id": 6, "text": None, "text_pair": b})]
    out = io.StringIO()
    predict_lines(predictor, read_jsonl(lines), out, 4)
    results = [json.loads(line) for line in out.getvalue().splitlines()]
    pair, = predictor.predict([(a, b)])
    assert {k: v for k, v in results[0].items() if k != "id"} == pair and "text_pair" not in results[0]
    assert results[1] == {"id": 2, "error": "the second text of the pair: expected a string, got int"}
    assert results[2] == {"id": 3, "text_pair": b, "error": 'the object has no "text" field (nor "question" and "context")'}
    assert {k: v for k, v in results[3].items() if k != "id"} == pair  # a list of two is the same pair
    assert results[4]["label"] in LABELS and results[4]["probabilities"] != pair["probabilities"]
    assert results[5] == {"id": 6, "error": "the first text of the pair: expected a string, got NoneType"}


def test_the_cli_reads_pairs_where_torch_cannot_be_imported(pair_bundle):
    stdin = json.dumps({"id": "p", "text": "a fine film", "text_pair": "boring"}) + "\n"
    result = run_predict(str(pair_bundle), stdin=stdin)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    expected, = Predictor(pair_bundle).predict([("a fine film", "boring")])
    assert line["id"] == "p" and line["label"] == expected["label"]
    assert line["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
