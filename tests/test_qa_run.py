"""python -m distill data=qa end to end on a tiny teacher: every recipe trains an extractive-QA student."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_tokenizer
from torch.utils.data import DataLoader
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

from alembert import demo_qa
from alembert.data import DataConfig, encode, load_task, loader
from alembert.demo import DemoConfig
from alembert.tasks import task_named
from alembert.training import TrainConfig
from distill.engine import fit
from distill.losses import Objective, Term
from distill.models import StudentConfig, Teacher, build_student
from distill.teacher_cache import CachedTeacher

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["data.demo.train_size=96", "data.demo.dev_size=24", "data.demo.test_size=24", "data.max_length=64",
         "data.doc_stride=16"]
QA = task_named("question_answering")
CONTEXT = "maria garcia founded acme in 1990 . wei chen bought acme in 1987 . acme is based in paris ."


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A 4-layer tiny BERT with a sequence head (python -m distill fine-tunes a span head first) whose tokenizer
    has every QA demo word as one token."""
    directory = tmp_path_factory.mktemp("qa-teacher")
    tokenizer = tiny_tokenizer(directory, extra=tuple(demo_qa.vocabulary()))
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(tiny_config("bert", len(tokenizer), 4)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> Path:
    """One fine-tuned-teacher cache for the module: runs with the same data and settings fine-tune once."""
    return tmp_path_factory.mktemp("qa-finetune-cache")


def cli_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("ALEMBERT_DEBUG", "HYDRA_FULL_ERROR")}
    env.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    return env


def distill_command(tmp_path: Path, teacher: Path, cache: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "distill", f"teacher={teacher}", "data=qa", *SIZES, "train.epochs=1",
            "train.batch_size=16", "finetune.train.epochs=1", f"finetune.cache_dir={cache}", "latency_seq_len=8",
            f"hydra.run.dir={tmp_path / 'out'}", *overrides]


def distill_cli(tmp_path: Path, teacher: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = distill_command(tmp_path, teacher, cache, *overrides)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=cli_env(), timeout=600)


def summary(tmp_path: Path) -> list[dict]:
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    for row in rows:
        assert 0.0 <= row["f1"] <= 1.0 and 0.0 <= row["exact_match"] <= 1.0 and row["exact_match"] <= row["f1"], row
    return rows


def check_student(directory: Path) -> None:
    student = AutoModelForQuestionAnswering.from_pretrained(directory)
    assert type(student).__name__ == "BertForQuestionAnswering"
    assert student.config.problem_type == "question_answering" and student.config.num_hidden_layers == 2
    assert student.qa_outputs.weight.shape == (2, student.config.hidden_size)


@pytest.mark.parametrize("recipe", ["distilbert", "tinybert", "minilm", "pkd", "theseus train.layerdrop=0.3"])  # kd: the next test
def test_every_recipe_distils_a_span_student(teacher, finetuned, tmp_path, recipe):
    name, *more = recipe.split()
    done = distill_cli(tmp_path, teacher, finetuned, f"recipe={name}", "baseline=false", *more)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [row["model"] for row in summary(tmp_path)] == ["teacher", "student (KD)"]
    check_student(tmp_path / "out" / "student")


def test_kd_brings_the_student_closer_to_the_teacher_than_hard_labels_alone(teacher, finetuned, tmp_path):
    """recipe=kd beside the hard-label baseline. The teacher gets more data, epochs and a tiny model's learning
    rate, so its span distributions carry something: the KD student's are then nearer them than the baseline's."""
    done = distill_cli(tmp_path, teacher, finetuned, "recipe=kd", "baseline=true", "data.demo.train_size=256",
                       "finetune.train.epochs=3", "finetune.train.lr=3e-3", "train.lr=1e-3")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["model"]: row for row in summary(tmp_path)}
    assert list(rows) == ["teacher", "student (KD)", "student (no KD)"]
    assert rows["student (KD)"]["kl_to_teacher"] < 0.75 * rows["student (no KD)"]["kl_to_teacher"], rows
    check_student(tmp_path / "out" / "student")
    check_student(tmp_path / "out" / "baseline")


def squad_json(path: Path, articles: list[list[tuple[str, str, list[str]]]]) -> Path:
    """A SQuAD v1.1 file: each article one paragraph (CONTEXT) of (id, question, answer texts) questions."""
    data = [{"title": f"article {number}", "paragraphs": [{"context": CONTEXT, "qas": [
        {"id": qid, "question": question, "answers": [{"text": text, "answer_start": CONTEXT.find(text)} for text in texts]}
        for qid, question, texts in questions]}]} for number, questions in enumerate(articles)]
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


QUESTIONS = [("q1", "who founded acme ?", ["maria garcia"]), ("q2", "when did wei chen buy acme ?", ["1987"]),
             ("q3", "where is acme based ?", ["paris"]), ("q4", "who bought acme ?", ["wei chen"])]


def jsonl_row(question: str, text: str) -> dict:
    return {"question": question, "context": CONTEXT, "answers": {"text": [text], "answer_start": [CONTEXT.find(text)]}}


def test_squad_json_and_jsonl_files_train_a_student(teacher, finetuned, tmp_path):
    train = squad_json(tmp_path / "train.json", [QUESTIONS[:2] * 4, QUESTIONS[2:] * 4])
    dev = jsonl(tmp_path / "dev.jsonl", [jsonl_row(q, texts[0]) for _, q, texts in QUESTIONS])
    done = distill_cli(tmp_path, teacher, finetuned, "data.task=files", f"data.train={train}", f"data.dev={dev}",
                       "baseline=false")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Results on the dev split" in done.stdout  # no test file: the JSONL dev file is the evaluation split
    assert [row["model"] for row in summary(tmp_path)] == ["teacher", "student (KD)"]
    check_student(tmp_path / "out" / "student")


def answer_not_in_context(tmp_path: Path) -> tuple[list[str], str]:
    train = squad_json(tmp_path / "train.json", [QUESTIONS, QUESTIONS[:1]])
    document = json.loads(train.read_text())
    document["data"][1]["paragraphs"][0]["qas"].append(
        {"id": "q-missing", "question": "who sold acme ?", "answers": [{"text": "john smith", "answer_start": 0}]})
    train.write_text(json.dumps(document))
    return ["data.task=files", f"data.train={train}"], f"{train} question q-missing: the answer 'john smith' does not occur"


def question_without_answers(tmp_path: Path) -> tuple[list[str], str]:
    train = squad_json(tmp_path / "train.json", [QUESTIONS, [("q-empty", "who sold acme ?", [])]])
    return ["data.task=files", f"data.train={train}"], f"{train} question q-empty has no answer"


def jsonl_without_context(tmp_path: Path) -> tuple[list[str], str]:
    rows = [jsonl_row(q, texts[0]) for _, q, texts in QUESTIONS]
    train = jsonl(tmp_path / "train.jsonl", [{k: v for k, v in row.items() if k != "context"} for row in rows])
    return ["data.task=files", f"data.train={train}"], f"{train} has no column context"


def stride_too_large(tmp_path: Path) -> tuple[list[str], str]:
    return ["data.doc_stride=60"], "data.doc_stride=60"


def augmentation(tmp_path: Path) -> tuple[list[str], str]:
    return ["augment.enabled=true", f"augment.mlm={tmp_path}"], "augment.enabled=true does not work for the question_answering task"


BAD = {"answer not in its context": answer_not_in_context, "a question without answers": question_without_answers,
       "JSONL without a context column": jsonl_without_context, "doc_stride too large": stride_too_large,
       "augmentation, which would move answers": augmentation}


@pytest.fixture(scope="module")
def bad_runs(teacher, tmp_path_factory) -> dict:
    """Every bad-input run, started at once: each fails while reading its data, after seconds of imports."""
    started = {}
    try:
        for case, make in BAD.items():
            root = tmp_path_factory.mktemp("bad-qa")
            overrides, fragment = make(root)
            command = distill_command(root, teacher, root / "cache", "baseline=false", *overrides)
            started[case] = (root, fragment, subprocess.Popen(command, cwd=ROOT, env=cli_env(), text=True,
                                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        finished = {}
        for case, (root, fragment, process) in started.items():
            stdout, stderr = process.communicate(timeout=600)
            finished[case] = (root, fragment, process.returncode, stdout, stderr)
        return finished
    finally:
        for _, _, process in started.values():
            if process.poll() is None:
                process.kill()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_qa_input_is_one_clean_error_line(case, bad_runs):
    root, fragment, returncode, stdout, stderr = bad_runs[case]
    errors = [line for line in stderr.splitlines() if line.startswith("alembert: error:")]
    assert returncode == 2, stderr[-2000:]
    assert len(errors) == 1, stderr[-2000:]
    assert "Traceback" not in stderr + stdout
    assert fragment in errors[0], errors[0]
    assert not (root / "out").exists() and not (root / "cache").exists()  # a failed run leaves nothing behind


# --- the teacher-logit cache (train.cache_teacher, on by default), in process ---

QA_DATA = DataConfig(task="demo", task_type="question_answering", text_column="question", text_pair_column="context",
                     label_column="answers", max_length=64, doc_stride=16, demo=DemoConfig(train_size=64, dev_size=8, test_size=8))


@pytest.fixture(scope="module")
def windows(teacher):
    """The demo's train windows, a shuffled loader over them, and a QA teacher with peaked span distributions."""
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    data = load_task(QA_DATA)
    rows = encode(data, "train", tokenizer, QA_DATA)
    assert len(rows) > len(data.splits["train"])  # contexts longer than 64 tokens give several windows
    config = tiny_config("bert", len(tokenizer), 4)
    config.num_labels, config.problem_type, config.initializer_range = 2, "question_answering", 0.3
    config.id2label, config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_config(config).eval()
    return rows, loader(rows, tokenizer, batch_size=8, task=QA, shuffle=True, seed=3), model


def test_the_teacher_cache_holds_one_row_per_window_keyed_by_window_index(windows):
    rows, train, model = windows
    teacher = Teacher(model)
    cache = CachedTeacher.build(teacher, train, torch.device("cpu"))
    assert [len(row) for row in cache.rows] == [len(r["input_ids"]) for r in rows]  # every window, its own length
    assert [r["index"] for r in rows] == list(range(len(rows))) and len({r["example"] for r in rows}) < len(rows)
    for batch in train:
        assert torch.equal(batch["labels"][:, 0], batch["index"])  # the label row starts with the window's index
        cached, live = cache.features(batch).logits, teacher.features(batch).logits
        real = batch["attention_mask"].bool()
        assert cached.shape == live.shape == (*batch["input_ids"].shape, 2)
        torch.testing.assert_close(cached[real], live[real], rtol=0, atol=1e-5)
        assert (cached[~real] == 0).all()  # padding is padding, not another window's logits


def span_distributions(model, data) -> torch.Tensor:
    """The start and end probabilities at every context token (and [CLS]) of every window, as the losses see them."""
    values = []
    with torch.no_grad():
        for batch in data:
            logits = QA.output_logits(model.eval()(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}))
            allowed = QA.positions(batch["labels"], batch["attention_mask"])
            values.append(logits.masked_fill(~allowed.unsqueeze(-1), -1e4).softmax(1)[allowed])
    return torch.cat(values)


def test_a_cached_teacher_distils_the_same_student_as_a_live_one(windows):
    """Soft targets alone: a cache keyed wrongly (by example, or by batch position) would train another student.

    Compared as span distributions, not weights: a softmax over tokens ignores a shift of every token's logit, so
    qa_outputs.bias and the key biases get no gradient but float noise, which Adam turns into lr-sized steps."""
    rows, train, model = windows
    objective = Objective((Term("kd", 1.0, (("temperature", 2.0),)),))
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, seed=5, precision="fp32")  # the cache pass runs in fp32
    evaluation = DataLoader(rows, batch_size=16, collate_fn=train.collate_fn)
    distributions = {}
    for cached in (None, True, False):
        torch.manual_seed(1)
        student = build_student(model, StudentConfig(num_layers=2))
        if cached is not None:
            fit(student, train, None, objective, replace(config, cache_teacher=cached), teacher=Teacher(model), keep_best=False)
        distributions[cached] = span_distributions(student, evaluation)
    assert (distributions[True] - distributions[None]).abs().max() > 0.1  # training moved the student a lot
    torch.testing.assert_close(distributions[True], distributions[False], rtol=0, atol=1e-5)
