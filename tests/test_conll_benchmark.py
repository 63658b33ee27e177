"""The CoNLL-2003 NER table (python -m benchmarks.conll) and the task-generic paired comparison under it.

Entity F1 is not a mean of per-sentence scores, so the paired bootstrap resamples sentences' [true positive,
predicted, gold] entity counts and recomputes F1 from their sums; these tests check it by hand, check that the
classification counts give exactly the SST-2 figures the earlier accuracy-only code gave, that the benchmark's
rows compose, and (on a tiny teacher and a tiny CoNLL-shaped folder) that the quick mode runs end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from alembert.tasks import task_named
from benchmarks.table.significance import paired_difference
from tests.test_table_benchmarks import composed_rows

ROOT = Path(__file__).resolve().parents[1]
TAGS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
NER = task_named("token_classification")
F1 = NER.score_counts


def one_hot(tags: list[list[str]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict `tags` (padded with O), and the same tags as labels (padding -100)."""
    logits = torch.zeros(len(tags), width, len(TAGS))
    labels = torch.full((len(tags), width), -100)
    for row, sentence in enumerate(tags):
        for position, tag in enumerate(sentence):
            logits[row, position, TAGS.index(tag)] = 1.0
            labels[row, position] = TAGS.index(tag)
    return logits, labels


def test_entity_counts_per_sentence_match_seqeval_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"], ["O", "O"], ["B-PER", "O"]]
    guess = [["B-PER", "I-PER", "O", "O"],      # PER right, LOC missed: tp 1, predicted 1, gold 2
             ["B-LOC", "B-PER"],                # LOC right, a spurious PER: 1, 2, 1
             ["B-LOC", "O"],                    # a spurious LOC in a sentence without entities: 0, 1, 0
             ["B-PER", "I-PER"]]                # wrong span: 0, 1, 1
    logits, _ = one_hot(guess, 4)
    _, labels = one_hot(gold, 4)
    counts = NER.example_counts(logits, labels, TAGS)
    assert counts.tolist() == [[1, 1, 2], [1, 2, 1], [0, 1, 0], [0, 1, 1]]
    assert float(F1(counts.sum(axis=0))) == pytest.approx(2 * 2 / (5 + 4))  # 2·Σtp / (Σpredicted + Σgold)
    assert float(F1(counts.sum(axis=0))) == pytest.approx(NER.metrics(logits, labels, TAGS)["f1"])
    assert F1(counts).tolist() == pytest.approx([2 / 3, 2 / 3, 0.0, 0.0])  # each sentence scored alone
    assert float(F1(np.array([0, 0, 0]))) == 1.0  # nothing to find and nothing claimed


def test_identical_predictions_differ_by_exactly_zero():
    counts = np.array([[1, 1, 2], [1, 2, 1], [0, 1, 0], [3, 3, 3]])
    same = paired_difference(counts, counts.copy(), F1)
    assert (same.delta, same.low, same.high, same.p_value, same.only_a, same.only_b) == (0.0, 0.0, 0.0, 1.0, 0, 0)
    assert same.summary() == "+0.0 [+0.0, +0.0]"


def test_a_model_that_finds_strictly_more_entities_is_ahead_by_the_corpus_f1_gap():
    gold = np.array([2, 1, 0, 3, 1, 2, 1, 1])
    more = np.stack([gold, gold, gold], axis=1)  # finds every entity, claims nothing else: F1 = 1
    fewer_tp = np.array([1, 1, 0, 1, 0, 2, 0, 1])
    fewer = np.stack([fewer_tp, fewer_tp, gold], axis=1)  # precise, but misses 5 of 11
    difference = paired_difference(more, fewer, F1)
    corpus_gap = 1.0 - 2 * 6 / (6 + 11)
    per_sentence_gap = float(np.mean(F1(more) - F1(fewer)))
    assert difference.delta == pytest.approx(corpus_gap) and abs(per_sentence_gap - corpus_gap) > 0.01
    assert 0.0 <= difference.low <= difference.delta <= difference.high
    assert (difference.only_a, difference.only_b) == (4, 0)  # the sentences where it finds more
    assert difference.p_value == pytest.approx(2 / 2**4)
    assert difference.summary().startswith(f"+{100 * corpus_gap:.1f} [")


def test_the_bootstrap_recomputes_f1_from_each_resamples_summed_counts():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 4, 60)
    a_tp, b_tp = np.minimum(gold, rng.integers(0, 4, 60)), np.minimum(gold, rng.integers(0, 4, 60))
    a = np.stack([a_tp, a_tp + rng.integers(0, 2, 60), gold], axis=1)
    b = np.stack([b_tp, b_tp + rng.integers(0, 2, 60), gold], axis=1)
    difference = paired_difference(a, b, F1, resamples=500, seed=3)
    samples = np.random.default_rng(3).integers(0, 60, (500, 60))
    by_hand = [F1(a[rows].sum(axis=0)) - F1(b[rows].sum(axis=0)) for rows in samples]
    assert (difference.low, difference.high) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))


def test_classification_counts_give_the_accuracy_figures_of_the_mcnemar_code_before_them():
    """SST-2's vs_baseline, p_value and wins_losses must not move: the same draws, the same test."""
    task = task_named("classification")
    rng = np.random.default_rng(7)
    labels = torch.from_numpy(rng.integers(0, 2, 872))
    logits_a, logits_b = torch.from_numpy(rng.normal(size=(872, 2))), torch.from_numpy(rng.normal(size=(872, 2)))
    logits_a[torch.arange(872), labels] += 0.6
    logits_b[torch.arange(872), labels] += 0.5
    correct_a = (logits_a.argmax(-1) == labels).numpy()
    correct_b = (logits_b.argmax(-1) == labels).numpy()
    new = paired_difference(task.example_counts(logits_a, labels), task.example_counts(logits_b, labels), task.score_counts)
    per_example = correct_a.astype(float) - correct_b.astype(float)  # the accuracy-only code, inlined
    samples = np.random.default_rng(0).integers(0, 872, (2000, 872))
    low, high = np.percentile(per_example[samples].mean(axis=1), [2.5, 97.5])
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    assert new.delta == pytest.approx(per_example.mean(), abs=1e-12)
    assert (new.low, new.high) == pytest.approx((low, high), abs=1e-12)
    assert (new.only_a, new.only_b) == (only_a, only_b)
    assert new.p_value == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    assert new.summary() == f"{100 * per_example.mean():+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
    assert paired_difference(correct_a, correct_b) == new  # plain correctness is the same comparison


def write_conll(folder: Path, sentences: int = 40) -> Path:
    """A tiny CoNLL-2003-shaped folder: four space-separated columns, IOB2 tags last, -DOCSTART- lines."""
    people, places = ["john smith", "anna", "peter brown", "maria"], ["paris", "berlin", "new york"]
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(sentences):
            person, place = people[i % 4].split(), places[i % 3].split()
            words = person + ["visited"] + place + ["."]
            tags = ["B-PER"] + ["I-PER"] * (len(person) - 1) + ["O"] + ["B-LOC"] + ["I-LOC"] * (len(place) - 1) + ["O"]
            lines += [f"{word} NN O {tag}" for word, tag in zip(words, tags)] + [""]
        (folder / f"{split}.txt").write_text("\n".join(lines))
    return folder


def test_the_conll_rows_compose_to_token_classification_runs_with_same_size_baselines(tmp_path):
    data = write_conll(tmp_path / "data")
    rows = composed_rows("conll", f"data_dir={data}")
    assert list(rows) == ["teacher", "no_kd_3l", "kd_3l", "tinybert_3l", "no_kd_2l", "kd_2l", "tinybert_2l"]
    assert {row.config.data.task_type for row in rows.values()} == {"token_classification"}
    assert {row.config.teacher for row in rows.values()} == {"minilm"}
    teacher = rows["teacher"].config
    assert (teacher.data.train, teacher.data.test) == (str(data.resolve() / "train.txt"), str(data.resolve() / "test.txt"))
    assert (teacher.data.max_train_examples, teacher.data.max_dev_examples, teacher.finetune.train.epochs) == (6000, 1000, 3)
    for row_id, row in rows.items():
        layers = row.config.student.num_layers
        if row.spec.kind == "distil":
            assert row.spec.baseline == f"no_kd_{layers}l" and rows[row.spec.baseline].spec.kind == "baseline"
            assert row.config.recipe.name in ("kd", "tinybert") and row_id.startswith(row.config.recipe.name)
    assert len({row.key for row in rows.values()}) == len(rows)
    quick = composed_rows("conll", f"data_dir={data}", "mode=quick")
    assert all(row.config.data.test is None and row.config.data.max_dev_examples == 100 for row in quick.values())
    assert all(quick[row].key != rows[row].key for row in rows)


def test_a_conll_folder_without_its_files_is_refused_in_one_line(tmp_path):
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.conll", f"data_dir={tmp_path}", f"work_dir={tmp_path / 'work'}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "lacks train.txt, dev.txt, test.txt" in lines[0], result.stderr[-2000:]


def test_quick_mode_builds_the_ner_table_end_to_end(tiny_dir, tmp_path):
    """The quick mode with a tiny teacher in place of MiniLM: every student in PyTorch, fused and int8 ONNX, an
    F1 column, and an interval against the same-size hard-label student for every distilled row."""
    data = write_conll(tmp_path / "data")
    overrides = [f"teacher={tiny_dir('bert', 4)}", f"finetune.cache_dir={tmp_path / 'teachers'}", "data.max_length=32",
                 "train.batch_size=16", "latency_seq_len=16"]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.conll", f"data_dir={data}", "mode=quick",
                             f"work_dir={tmp_path / 'work'}", f"results_dir={tmp_path / 'results'}",
                             "overrides=[" + ",".join(f"'{item}'" for item in overrides) + "]"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results" / "conll_quick.json").read_text())
    assert results["metric"] == "f1"
    rows = results["rows"]
    students = {"no_kd_3l", "kd_3l", "tinybert_3l", "no_kd_2l", "kd_2l", "tinybert_2l"}
    assert {row["id"] for row in rows} == {"teacher"} | students
    for student in students:
        assert {row["runtime"] for row in rows if row["id"] == student} == {"PyTorch fp32", "ONNX optimized", "ONNX int8_dynamic"}
    pytorch = {row["id"]: row for row in rows if row["runtime"] == "PyTorch fp32"}
    assert all(0.0 <= row["f1"] <= 1.0 and "f1" in row["metrics"] for row in rows)
    assert pytorch["teacher"]["speedup"] == 1.0
    for row_id in ("kd_3l", "tinybert_3l", "kd_2l", "tinybert_2l"):
        baseline = pytorch[f"no_kd_{row_id[-2:]}"]
        delta = 100 * (pytorch[row_id]["f1"] - baseline["f1"])
        assert pytorch[row_id]["vs_baseline"].startswith(f"{delta:+.1f} ["), (row_id, pytorch[row_id]["vs_baseline"], delta)
    table = (tmp_path / "results" / "conll_quick.md").read_text()
    assert "| model | runtime | f1 | pct_of_teacher | vs_baseline |" in table and "dev, first 100 sentences" in table
    assert (tmp_path / "results" / "conll_quick.png").stat().st_size > 10_000
