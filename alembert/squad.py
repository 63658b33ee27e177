"""Extractive-QA data: SQuAD v1.1 JSON files, JSON-lines rows and hub rows read into (question, context, answers).

Every source gives the same row: the question, the context and its gold answers as ((text, answer_start), ...).
An answer whose `answer_start` does not point at its text is moved to the occurrence of the text nearest to it
(files rebuilt from web pages, like the reconstructed SQuAD train set, carry such offsets); an answer whose
text is not in the context at all is refused with the file and question it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

from alembert.errors import fail
from alembert.tables import read_table, read_text

Answers = tuple[tuple[str, int], ...]  # (text, character offset into the context)


def read_qa_file(path: Path, config) -> list[tuple]:
    """(question, context, answers, where) rows of a SQuAD-format .json, or (question, context, answers) rows of a
    .jsonl file with data.text_column / data.text_pair_column / data.label_column (question / context / answers)."""
    if path.suffix.lower() == ".json" and path.is_file():
        document = _json_document(path, config.encoding)
        if isinstance(document, dict) and "data" in document:
            return list(_squad_rows(path, document))
    return read_table(path, config)


def _json_document(path: Path, encoding: str):
    text = read_text(path, encoding)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None  # not one JSON document: JSON lines, which read_table parses and reports on line by line


def _squad_rows(path: Path, document: dict):
    if not isinstance(document["data"], list):
        raise fail(f"{path}: 'data' is not a list of articles", "give a SQuAD v1.1 file: {\"data\": [{\"paragraphs\": [...]}]}")
    for article_number, article in enumerate(document["data"], 1):
        for paragraph in _items(article, "paragraphs", path, f"article {article_number}"):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            for number, qa in enumerate(_items(paragraph, "qas", path, f"article {article_number}"), 1):
                where = f"{path} question {qa.get('id', number) if isinstance(qa, dict) else number}"
                if not isinstance(qa, dict):
                    raise fail(f"{where} is not an object", "give each question as {\"id\", \"question\", \"answers\"}")
                yield qa.get("question"), context, qa.get("answers"), where


def _items(parent, key: str, path: Path, where: str) -> list:
    items = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(items, list):
        raise fail(f"{path} {where} has no list '{key}'", "give a SQuAD v1.1 file: articles > paragraphs > qas")
    return items


def parse_answers(answers, context: str, where: str) -> Answers:
    """Gold answers from {"text": [...], "answer_start": [...]} (JSON lines, hub) or [{"text", "answer_start"}, ...]
    (SQuAD JSON), each checked against the context."""
    pairs = _answer_pairs(answers, where)
    if not pairs:
        raise fail(f"{where} has no answer", "every question needs at least one answer span (SQuAD v2's unanswerable "
                   "questions are not supported)")
    return tuple(_located(text, start, context, where) for text, start in pairs)


def _answer_pairs(answers, where: str) -> list[tuple]:
    if isinstance(answers, dict) and {"text", "answer_start"} <= set(answers):
        texts, starts = answers["text"], answers["answer_start"]
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise fail(f"{where}: answers.text and answers.answer_start must be lists of the same length",
                       'give answers as {"text": ["..."], "answer_start": [12]}')
        return list(zip(texts, starts))
    if isinstance(answers, list) and all(isinstance(a, dict) and {"text", "answer_start"} <= set(a) for a in answers):
        return [(a["text"], a["answer_start"]) for a in answers]
    raise fail(f"{where}: answers must be {{\"text\": [...], \"answer_start\": [...]}} (got {type(answers).__name__})",
               "give each question its answer texts and character offsets into the context")


def _located(text, start, context: str, where: str) -> tuple[str, int]:
    if not isinstance(text, str) or not text.strip():
        raise fail(f"{where} has an empty answer text", "give each answer the span of context it covers")
    if isinstance(start, bool) or not isinstance(start, int):
        raise fail(f"{where}: answer_start must be an integer (got {start!r})", "give character offsets into the context")
    if context[start:start + len(text)] == text:
        return text, start
    found = list(_occurrences(context, text))
    if not found:
        raise fail(f"{where}: the answer '{text[:60]}' does not occur in its context",
                   "fix the answer text or the context; answers must be spans of the context")
    return text, min(found, key=lambda i: abs(i - start))


def _occurrences(context: str, text: str):
    position = context.find(text)
    while position >= 0:
        yield position
        position = context.find(text, position + 1)
