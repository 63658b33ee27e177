"""Local data files (.csv, .tsv, .jsonl) read into (text, text_pair, label) rows.

Every problem a file can have (wrong encoding, ragged rows, broken quoting, a missing column) is
reported in one line naming the file and the line in it, because "row 3418 of the training set" is
useless to someone looking at the file in an editor.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from alembert.errors import fail

Record = tuple[int, dict]  # (1-based line in the file, column name -> value)
TEXT_SUFFIXES = ("", ".txt", ".text")  # plain text: one text per line


def read_texts(path: Path, config, what: str) -> list[tuple]:
    """Unlabelled (text, text_pair, None[, where]) rows: a plain text file, one text per line (blank lines skipped),
    or data.text_column (and text_pair_column) of a .csv, .tsv or .jsonl; `what` names the file in errors."""
    if path.suffix.lower() in TEXT_SUFFIXES:
        if not path.is_file():
            raise fail(f"{what} {path} does not exist", "give a text file with one text per line")
        lines = read_text(path, config.encoding).splitlines()
        return [(line, None, None, f"{path} line {number}") for number, line in enumerate(lines, 1) if line.strip()]
    # read_table checks a label column too: naming the text column twice reads the text alone, with its checks
    return [(text, pair, None) for text, pair, _ in read_table(path, replace(config, label_column=config.text_column))]


def read_table(path: Path, config) -> list[tuple]:
    """Read (text, text_pair, label) rows from a .csv, .tsv, .jsonl or .json-lines file.

    `config` is a DataConfig (its columns, header and encoding); typed loosely to keep this module import-free.
    """
    if not path.is_file():
        raise fail(f"data file {path} does not exist", "check data.train/data.dev/data.test")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".tsv", ".txt"):
        raise fail(f"data file {path} has an unknown extension '{suffix}'", "use .csv, .tsv or .jsonl")
    text = read_text(path, config.encoding)
    if suffix in (".jsonl", ".json"):
        records = _read_jsonl(path, text)
    else:
        records = _read_delimited(path, text, "\t" if suffix in (".tsv", ".txt") else ",", config.header)
    if not records:
        raise fail(f"data file {path} has no rows", "give a file with at least one example")
    pair = str(config.text_pair_column) if config.text_pair_column is not None else None
    columns = [str(config.text_column), str(config.label_column)] + ([pair] if pair else [])
    for position, (line, record) in enumerate(records):
        _check_columns(path, line if position else None, record, columns)
    return [(r[columns[0]], r[pair] if pair else None, r[columns[1]]) for _, r in records]


def _check_columns(path: Path, line: int | None, record: dict, columns: list[str]) -> None:
    missing = [c for c in columns if c not in record]
    if missing:
        where = f"data file {path}" + (f" line {line}" if line is not None else "")
        raise fail(f"{where} has no column {', '.join(missing)} (it has {', '.join(record)})",
                   "set data.text_column / data.text_pair_column / data.label_column, or data.header=false for positional columns")


def read_text(path: Path, encoding: str) -> str:
    """The whole file decoded with `encoding`; a bad byte is reported with its line and column."""
    try:
        "".encode(encoding)  # also refuses codecs that are not text encodings, such as base64
    except LookupError:
        raise fail(f"data.encoding={encoding} is not a text encoding Python knows",
                   "use a name such as utf-8, utf-8-sig, latin-1 or cp1252") from None
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise _decode_error(path, raw, encoding, err.start) from None
    return text.removeprefix("\ufeff")  # Excel and Notepad write a BOM that would stick to the first column name


def _decode_error(path: Path, raw: bytes, encoding: str, start: int):
    line = raw.count(b"\n", 0, start) + 1
    line_start = raw.rfind(b"\n", 0, start) + 1
    column = len(raw[line_start:start].decode(encoding, errors="replace")) + 1
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig"):
        fix = "set data.encoding=latin-1 (or the file's encoding), or re-save the file as UTF-8"
    else:
        fix = "set data.encoding to the file's real encoding (utf-8, cp1252, latin-1, ...)"
    return fail(f"data file {path} line {line} is not valid {encoding} (byte 0x{raw[start]:02x} at column {column})", fix)


def _read_delimited(path: Path, text: str, delimiter: str, header: bool) -> list[Record]:
    rows = _parse_rows(path, text, delimiter)
    if not rows:
        return []
    if header:
        (_, names), rows = rows[0], rows[1:]
        reference = f"the header has {len(names)}"
    else:
        names = [str(i) for i in range(len(rows[0][1]))]
        reference = f"the first row (line {rows[0][0]}) has {len(names)}"
    for line, row in rows:
        if len(row) != len(names):
            raise _ragged(path, line, len(row), reference, delimiter)
    return [(line, dict(zip(names, row))) for line, row in rows]


def _parse_rows(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the file line each starts on. TSV takes quotes literally; CSV quoting is strict,
    so a malformed or unclosed quote fails at its line instead of swallowing the rest of the file."""
    tsv = delimiter == "\t"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=not tsv)
    rows, last = [], 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if any(field.strip() for field in row):  # blank and whitespace-only lines carry no example
                rows.append((start, row))
    except csv.Error as err:
        upto = f", reading up to line {reader.line_num}" if reader.line_num > last + 1 else ""
        raise fail(f"data file {path} line {last + 1} is not valid CSV ({err}{upto})",
                   'close every quoted field with a quote, and double quotes inside quoted fields ("")') from None
    return rows


def _ragged(path: Path, line: int, count: int, reference: str, delimiter: str):
    name = "tab" if delimiter == "\t" else "comma"
    fix = ("remove stray tabs, and separate every column with exactly one tab" if delimiter == "\t"
           else "quote fields that contain a comma, and give every row each column")
    return fail(f"data file {path} line {line} has {count} {name}-separated field{'s' * (count != 1)} but {reference}", fix)


def _read_jsonl(path: Path, text: str) -> list[Record]:
    records = []
    for number, line in enumerate(io.StringIO(text), 1):
        if not line.strip():
            continue
        try:
            records.append((number, {str(k): v for k, v in json.loads(line).items()}))
        except (json.JSONDecodeError, AttributeError):
            raise fail(f"{path} line {number} is not a JSON object", "write one JSON object per line") from None
    return records


__all__ = ["read_table", "read_text"]
