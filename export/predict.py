"""`python -m export.predict BUNDLE "text" ...`, or JSONL on stdin -> JSONL on stdout. Torch-free.

A stdin line is a JSON string, or an object with a "text" field and, for a sentence-pair task, a
"text_pair" field (other fields, such as an id, are copied to the output line, except those named
like result fields). A text may also be a pair as a list of two strings. A line that is not valid
JSON, or whose text or pair is malformed, gets an error line; the rest go on. A token-classification
bundle answers with entities (--aggregation first|average|max; long texts in windows, --stride); a
question-answering bundle takes {"question": ..., "context": ...} lines (or [question, context] pairs)
and answers with {"answer", "start", "end", "score"}, character offsets into the context.
Stdin is read as UTF-8 whatever the locale; each output line is one line for any line splitter.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator

from alembert.errors import fail, run_cli
from alembert.decoding import AGGREGATIONS
from export.providers import EXECUTION_PROVIDERS
from export.runtime import Predictor

RESULT_FIELDS = {"label", "probabilities", "score", "entities", "answer", "start", "end", "windows", "truncated", "error"}
TEXT_FIELDS = {"text", "text_pair", "question", "context"}  # what a line's item is made of; not echoed back
# Line breaks to str.splitlines() that json.dumps leaves raw when it writes non-ASCII text.
LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class LineError(str):
    """Stands in for a text when an input line cannot supply one; becomes that line's error."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export.predict", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="directory written by python -m export")
    parser.add_argument("texts", nargs="*", help="texts to classify (QA: question and context, two by two); "
                                                 "without any, read JSONL from stdin")
    parser.add_argument("--variant", default=None, help="variant name from manifest.json (default: the bundle's default)")
    parser.add_argument("--runtime", default="onnxruntime", help="onnxruntime, or openvino (the optional extra)")
    parser.add_argument("--precision-hint", default=None, help="OpenVINO's: f32, or bf16 on AMX / AVX-512-BF16 CPUs")
    parser.add_argument("--provider", default="cpu", choices=tuple(EXECUTION_PROVIDERS),
                        help="onnxruntime execution provider (the CPU when this onnxruntime lacks it)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="first",
                        help="token tasks: a word's tag from its first sub-token, their average, or the most confident one")
    parser.add_argument("--stride", type=int, default=None,
                        help="token and QA tasks: tokens shared by consecutive windows of a long text (default: the "
                             "bundle's doc_stride, else a quarter of a window)")
    return parser.parse_intermixed_args(argv)  # options may come before or after the texts


def text_lines(stream):
    """Stdin as UTF-8 (what JSONL is), a leading BOM dropped, and undecodable bytes kept as lone surrogates:
    a bad byte costs its own line an error instead of ending the run. A stream without reconfigure (StringIO) passes as is."""
    if hasattr(stream, "reconfigure"):
        stream.reconfigure(encoding="utf-8-sig", errors="surrogateescape")
    return stream


def read_jsonl(lines: Iterable[str]) -> Iterator[tuple[dict, object]]:
    """(fields to echo, the text item) per non-blank line; a bad line carries a LineError instead of a text."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=reject_constant)
        except (ValueError, RecursionError) as err:
            yield {"line": number}, LineError(f"not valid JSON ({json_problem(err)})")
            continue
        if not isinstance(record, dict):
            yield {}, record
        elif "text" not in record and not {"question", "context"} <= set(record):
            yield record, LineError('the object has no "text" field (nor "question" and "context")')
        else:
            yield {key: value for key, value in record.items() if key not in TEXT_FIELDS}, text_item(record)


def text_item(record: dict) -> object:
    """The record's text, its (text, text_pair) or its (question, context) pair; a malformed pair gets its error from
    the predictor."""
    if "text" not in record:
        return record["question"], record["context"]
    if "text_pair" not in record:
        return record["text"]
    return record["text"], record["text_pair"]


def reject_constant(name: str):
    """NaN and Infinity are Python's extensions to JSON: echoed back, they would make the output invalid JSON."""
    raise ValueError(f"{name} is not a JSON value")


def json_problem(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return err.msg
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(":")[0]  # e.g. a number past Python's int digit limit; the rest is advice for programmers


def json_line(fields: dict, encoding: str) -> str:
    """`fields` as one JSON line that `encoding` can write."""
    try:
        line = json.dumps(fields, ensure_ascii=False).translate(LINE_BREAKS)
        line.encode(encoding)
    except UnicodeEncodeError:  # a lone surrogate (from undecodable input) or a character the stream lacks: escape all
        line = json.dumps(fields)
    except (ValueError, RecursionError):  # echoed fields nested just past what json can write back
        line = json.dumps({"error": "the line's other fields are nested too deeply to write back"})
    return line + "\n"


def predict_lines(predictor: Predictor, records: Iterable[tuple[dict, object]], out, batch_size: int) -> None:
    """Predict in batches and write one JSON line per input line, in order."""
    pending: list[tuple[dict, object]] = []
    encoding = getattr(out, "encoding", None) or "utf-8"  # StringIO has none

    def flush() -> None:
        answers = iter(predictor.predict([item for _, item in pending if not isinstance(item, LineError)]))
        for echo, item in pending:
            result = {"error": str(item)} if isinstance(item, LineError) else next(answers)
            kept = {key: value for key, value in echo.items() if key not in RESULT_FIELDS}  # never both error and label
            out.write(json_line({**kept, **result}, encoding))
        out.flush()
        pending.clear()

    for record in records:
        pending.append(record)
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    predictor = Predictor(args.bundle, args.variant, runtime=args.runtime, precision_hint=args.precision_hint,
                          threads=args.threads, batch_size=args.batch_size,
                          aggregation=args.aggregation, stride=args.stride, provider=args.provider)
    records = argument_items(args.texts, predictor.decoder.pair_only) if args.texts else read_jsonl(text_lines(sys.stdin))
    predict_lines(predictor, records, sys.stdout, args.batch_size)


def argument_items(texts: list[str], pairs: bool) -> list[tuple[dict, object]]:
    """Command-line texts as items: one each, or for a question-answering bundle (question, context) two by two."""
    if not pairs:
        return [({"text": text}, text) for text in texts]
    if len(texts) % 2:
        raise fail(f"a question-answering bundle takes a question and a context per item; got {len(texts)} texts",
                   'pass them in pairs: "question" "context" ..., or JSONL {"question", "context"} lines on stdin')
    return [({}, (question, context)) for question, context in zip(texts[::2], texts[1::2])]


if __name__ == "__main__":
    run_cli(main)
