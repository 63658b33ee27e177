"""The question-answering task on its own: windows and offsets, span losses by hand, the best span across windows,
SQuAD EM/F1 on hand-worked examples, and reading SQuAD files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForQuestionAnswering, BertConfig

from alembert import demo_qa
from alembert.data import DataConfig, Example, encode, load_task, make_collate
from alembert.decoding import best_span
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from alembert.tagging import IGNORED
from alembert.tasks import task_named, task_of
from alembert.tasks.question_answering import squad_scores
from tests.conftest import tiny_tokenizer

QA = task_named("question_answering")
QA_COLUMNS = dict(task_type="question_answering", text_column="question", text_pair_column="context", label_column="answers")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("qa-tok"), tuple(demo_qa.vocabulary()))


def windows(tokenizer, examples, max_length=32, stride=8):
    return QA.encode(examples, tokenizer, DataConfig(**QA_COLUMNS, max_length=max_length, doc_stride=stride))


def span_of(row) -> tuple[int, int]:
    roles = row["labels"][1:]
    return (next(i for i, r in enumerate(roles) if r in (1, 3)), next(i for i, r in enumerate(roles) if r in (2, 3)))


# --- windows, offsets and labels ------------------------------------------------------------------------------

def test_a_long_context_becomes_overlapping_windows_whose_labels_point_at_the_answer_characters(tokenizer):
    data = load_task(DataConfig(**QA_COLUMNS, demo=DemoConfig(train_size=40, dev_size=4, test_size=4)))
    rows = windows(tokenizer, data.splits["train"])
    assert len(rows) > len(data.splits["train"])  # contexts of ~60 words do not fit 32 tokens
    assert [row["index"] for row in rows] == list(range(len(rows)))  # the teacher cache's key: one per window
    found = 0
    for row in rows:
        example = data.splits["train"][row["example"]]
        text, start = example.label[0]
        first, last = span_of(row)
        if row["context_offsets"][first] is None:  # the answer is not in this window: both point at [CLS]
            assert first == last == 0 and row["input_ids"][0] == tokenizer.cls_token_id
            continue
        found += 1
        characters = example.text_pair[row["context_offsets"][first][0]:row["context_offsets"][last][1]]
        assert characters == text and row["context_offsets"][first][0] == start
    assert found >= len(data.splits["train"])  # every answer lies whole in at least one window


def test_off_context_tokens_are_ignored_and_consecutive_windows_share_the_stride(tokenizer):
    context = " ".join(f"maria garcia founded the company in {1950 + i} ." for i in range(8))
    example = Example("who founded the company ?", context, (("maria garcia", 0),))
    rows = windows(tokenizer, [example], max_length=32, stride=8)
    assert len(rows) >= 3
    for row in rows:
        question_tokens = [i for i, offset in enumerate(row["context_offsets"]) if offset is None]
        assert all(row["labels"][1 + i] == IGNORED for i in question_tokens if i != 0)  # [CLS] is the no-answer slot
    first, second = ([o for o in row["context_offsets"] if o is not None] for row in rows[:2])
    assert first[-8:] == second[:8]  # 8 shared context tokens


def test_a_stride_that_leaves_no_room_beside_the_question_is_refused_in_one_line(tokenizer):
    example = Example("who founded the company ?", "maria garcia founded the company .", (("maria garcia", 0),))
    with pytest.raises(AlembertError, match=r"data.max_length=12 tokens leave .* not more than data.doc_stride=8"):
        windows(tokenizer, [example], max_length=12, stride=8)


# --- losses by hand ------------------------------------------------------------------------------------------

def labelled_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two windows of 5 tokens: token 1 is a question token (ignored), the answer spans 2..3 in the first; the
    second lacks it (both at [CLS]) and has one padding token."""
    labels = torch.tensor([[0, 0, IGNORED, 1, 2, 0], [1, 3, IGNORED, 0, 0, IGNORED]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    torch.manual_seed(0)
    return torch.randn(2, 5, 2), labels, mask


def test_span_cross_entropy_is_the_mean_of_the_start_and_end_cross_entropies():
    logits, labels, _ = labelled_batch()
    starts, ends = torch.tensor([2, 0]), torch.tensor([3, 0])
    expected = (F.cross_entropy(logits[..., 0], starts) + F.cross_entropy(logits[..., 1], ends)) / 2
    assert QA.hard_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_span_kd_is_the_kl_of_start_and_end_distributions_over_the_context_at_t_squared():
    student, labels, mask = labelled_batch()
    teacher = torch.randn(2, 5, 2) * 3
    temperature = 2.0
    allowed = [[0, 2, 3, 4], [0, 2, 3]]  # [CLS] and the context tokens; never the question token nor padding
    terms = []
    for window, kept in enumerate(allowed):
        for side in (0, 1):
            p = torch.softmax(teacher[window, kept, side] / temperature, -1)
            q = torch.softmax(student[window, kept, side] / temperature, -1)
            terms.append(float((p * (p.log() - q.log())).sum()))
    expected = sum(terms) / len(terms) * temperature**2
    rows = QA.soft_rows(student, labels, mask), QA.soft_rows(teacher, labels, mask)
    assert QA.soft_loss(*rows, temperature).item() == pytest.approx(expected, rel=1e-5)
    assert QA.soft_loss(rows[0], rows[0], temperature).item() == pytest.approx(0.0, abs=1e-7)  # masks give 0, not NaN


# --- the best span across windows -----------------------------------------------------------------------------

def test_the_best_span_is_taken_across_windows_within_the_context_and_the_length_limit():
    offsets = [None, (0, 5), (6, 12), (13, 20), (21, 27)]  # token 0 is off the context
    weak = np.array([[9.0, 9.0], [1, 0], [0, 1], [0, 0], [0, 0]])  # [CLS]-like token 0 scores highest but is excluded
    strong = np.array([[0.0, 0.0], [0, 0], [0, 0], [4, 0], [0, 5]])
    span = best_span([weak, strong], [offsets, offsets])
    assert (span.start, span.end) == (13, 27) and span.logit == 9.0 and 0 < span.score <= 1
    short = best_span([strong], [offsets], max_answer_tokens=1)
    assert (short.start, short.end, short.logit) == (21, 27, 5.0)  # one token: the end token alone beats the start's
    backwards = np.array([[0.0, 0.0], [0, 5], [0, 0], [0, 0], [5, 0]])  # best start after best end: not a span
    span = best_span([backwards], [offsets])
    assert span.start <= span.end and span.logit < 10


def test_metrics_score_the_best_span_per_question_over_all_its_windows(tokenizer):
    example = Example("who founded acme ?", "maria garcia founded acme . " * 6 + "wei chen bought acme .",
                      (("wei chen", 6 * len("maria garcia founded acme . ")),))
    rows = windows(tokenizer, [example], max_length=24, stride=4)
    batch = make_collate(0, QA)(rows)
    logits = torch.zeros(len(rows), batch["input_ids"].shape[1], 2)
    last = len(rows) - 1  # only the last window holds the answer; make it pick the gold span there
    first, end = span_of(rows[last])
    logits[last, first, 0] = logits[last, end, 1] = 5.0
    metrics = QA.metrics(logits, batch["labels"], rows=rows)
    assert metrics["exact_match"] == 1.0 and metrics["f1"] == 1.0
    logits[0, 1:, :] = 0.0
    context_tokens = [i for i, o in enumerate(rows[0]["context_offsets"]) if o is not None]
    logits[0, context_tokens[0], 0] = logits[0, context_tokens[1], 1] = 20.0  # a stronger wrong span elsewhere
    assert QA.metrics(logits, batch["labels"], rows=rows)["exact_match"] == 0.0
    with pytest.raises(AlembertError, match="need the encoded rows"):
        QA.metrics(logits, batch["labels"])


# --- SQuAD EM/F1 --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("predicted, answers, em, f1", [
    ("the Denver Broncos", ("Denver Broncos",), 1.0, 1.0),  # articles and case are normalised away
    ("Denver Broncos!", ("Denver Broncos",), 1.0, 1.0),  # and punctuation
    ("Denver", ("Denver Broncos",), 0.0, 2 * 1.0 * 0.5 / 1.5),  # precision 1, recall 1/2
    ("Broncos of Denver", ("Carolina", "Denver Broncos"), 0.0, 0.8),  # the best answer counts: P 2/3, R 1
    ("", ("Denver",), 0.0, 0.0),
])
def test_squad_exact_match_and_f1_match_hand_worked_examples(predicted, answers, em, f1):
    assert squad_scores(predicted, answers) == pytest.approx((em, f1), abs=1e-6)


def test_per_question_counts_give_the_same_f1_as_the_metric(tokenizer):
    data = load_task(DataConfig(**QA_COLUMNS, demo=DemoConfig(train_size=4, dev_size=12, test_size=4)))
    config = DataConfig(**QA_COLUMNS, max_length=32, doc_stride=8)
    rows = encode(data, "dev", tokenizer, config)
    batch = make_collate(0, QA)(rows)
    logits = torch.randn(len(rows), batch["input_ids"].shape[1], 2, generator=torch.Generator().manual_seed(1))
    counts = QA.example_counts(logits, batch["labels"], rows=rows)
    assert counts.shape == (12, 3)  # one row per question, not per window
    assert QA.score_counts(counts.sum(0)) == pytest.approx(QA.metrics(logits, batch["labels"], rows=rows)["f1"])


# --- reading SQuAD files ---------------------------------------------------------------------------------------

def squad_file(path, answers, context="Maria Garcia founded Acme in 1998. Acme moved to Lima."):
    document = {"version": "1.1", "data": [{"title": "Acme", "paragraphs": [
        {"context": context, "qas": [{"id": "q1", "question": "Who founded Acme?", "answers": answers}]}]}]}
    path.write_text(json.dumps(document))
    return path


def qa_files(tmp_path, answers):
    return DataConfig(**QA_COLUMNS, task="files", train=str(squad_file(tmp_path / "train.json", answers)))


def test_a_squad_json_file_is_read_and_a_misplaced_answer_start_is_moved_to_its_nearest_occurrence(tmp_path):
    data = load_task(qa_files(tmp_path, [{"text": "Acme", "answer_start": 30}, {"text": "Maria Garcia", "answer_start": 0}]))
    (example,) = data.splits["train"]
    assert example.text == "Who founded Acme?" and example.label == (("Acme", 35), ("Maria Garcia", 0))
    assert data.label_names is None


@pytest.mark.parametrize("answers, message", [
    ([{"text": "Oslo", "answer_start": 0}], r"train.json question q1: the answer 'Oslo' does not occur in its context"),
    ([], r"train.json question q1 has no answer"),
    ({"text": ["Acme"], "answer_start": [1, 2]}, r"answers.text and answers.answer_start must be lists of the same length"),
    ([{"text": "Acme", "answer_start": "35"}], r"answer_start must be an integer"),
])
def test_a_bad_answer_is_refused_in_one_line_naming_the_file_and_question(tmp_path, answers, message):
    with pytest.raises(AlembertError, match=message):
        load_task(qa_files(tmp_path, answers))


def test_jsonl_rows_with_answer_lists_are_read_like_the_hub_gives_them(tmp_path):
    line = {"question": "Who?", "context": "Wei Chen did.", "answers": {"text": ["Wei Chen"], "answer_start": [0]}}
    (tmp_path / "train.jsonl").write_text(json.dumps(line) + "\n")
    data = load_task(DataConfig(**QA_COLUMNS, task="files", train=str(tmp_path / "train.jsonl")))
    assert data.splits["train"][0].label == (("Wei Chen", 0),)


def test_a_saved_qa_model_says_its_task(tmp_path):
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        **QA.head_kwargs(None))
    AutoModelForQuestionAnswering.from_config(config).save_pretrained(tmp_path)
    assert task_of(BertConfig.from_pretrained(tmp_path)) is QA
    plain = BertConfig(architectures=["BertForQuestionAnswering"])  # saved by plain transformers: no problem_type
    assert task_of(plain) is QA and math.isclose(QA.int8_metric_drop(), 0.015)


def test_a_saved_hub_dataset_with_squad_columns_is_read(tmp_path):
    import datasets

    rows = {"id": ["a", "b"], "question": ["Who came?", "Who left?"], "context": ["Ann came.", "Bo left early."],
            "answers": [{"text": ["Ann"], "answer_start": [0]}, {"text": ["Bo"], "answer_start": [0]}]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}) \
        .save_to_disk(str(tmp_path / "squad-like"))
    data = load_task(DataConfig(**QA_COLUMNS, task=str(tmp_path / "squad-like")))
    assert [e.label for e in data.splits["dev"]] == [(("Ann", 0),), (("Bo", 0),)]
    assert data.splits["train"][1].text_pair == "Bo left early."
