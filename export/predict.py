"""`python -m export.predict BUNDLE "text" ...`, or JSONL on stdin -> JSONL on stdout. Torch-free.

A stdin line is a JSON string, or an object with a "text" field (other fields, such as an id,
are copied to the output line). A line that is not valid JSON gets an error line; the rest go on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator

from distill.errors import run_cli
from export.runtime import Predictor



class LineError(str):
    """Stands in for a text when an input line cannot supply one; becomes that line's error."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export.predict", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="directory written by python -m export")
    parser.add_argument("texts", nargs="*", help="texts to classify; without any, read JSONL from stdin")
    parser.add_argument("--variant", default=None, help="variant name from manifest.json (default: the bundle's default)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_intermixed_args(argv)  # options may come before or after the texts


def read_jsonl(lines: Iterable[str]) -> Iterator[tuple[dict, object]]:
    """(fields to echo, the text item) per non-blank line; a bad line carries a LineError instead of a text."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield {"line": number}, LineError(f"not valid JSON ({err.msg})")
            continue
        if not isinstance(record, dict):
            yield {}, record
        elif "text" not in record:
            yield record, LineError('the object has no "text" field')
        else:
            yield {key: value for key, value in record.items() if key != "text"}, record["text"]


def predict_lines(predictor: Predictor, records: Iterable[tuple[dict, object]], out, batch_size: int) -> None:
    """Predict in batches and write one JSON line per input line, in order."""
    pending: list[tuple[dict, object]] = []

    def flush() -> None:
        answers = iter(predictor.predict([item for _, item in pending if not isinstance(item, LineError)]))
        for echo, item in pending:
            result = {"error": str(item)} if isinstance(item, LineError) else next(answers)
            out.write(json.dumps({**echo, **result}, ensure_ascii=False) + "\n")
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
    predictor = Predictor(args.bundle, args.variant, threads=args.threads, batch_size=args.batch_size)
    records = (({"text": text}, text) for text in args.texts) if args.texts else read_jsonl(sys.stdin)
    predict_lines(predictor, records, sys.stdout, args.batch_size)


if __name__ == "__main__":
    run_cli(main)
