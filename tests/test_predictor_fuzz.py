"""Property-based fuzzing of the torch-free predictor and of the JSONL path of `python -m export.predict`.

Whatever an item or an input line holds, every item gets exactly one result and every non-blank line
exactly one JSON output line, in order, and nothing raises.
"""

from __future__ import annotations

import io
import json
import math
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.bundle import build_bundle
from export.config import ExportConfig, LatencyConfig, ParityConfig
from export.predict import json_line, predict_lines, read_jsonl, text_lines
from export.runtime import Predictor

MAX_LENGTH = 32
FAST = dict(parity=ParityConfig(batch_sizes=(1, 3), max_lengths=(8, 40), samples=12),
            latency=LatencyConfig(runs=2, warmup=1, seq_len=16))
FUZZ = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def predictor(tiny_dir, tmp_path_factory) -> Predictor:
    """The bundle's default (fused) graph, built once; small batches so a fuzzed list spans several of them."""
    out = tmp_path_factory.mktemp("fuzz") / "bundle"
    bundle = build_bundle(ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(out), variants=("optimized",),
                                       max_length=MAX_LENGTH, **FAST))
    return Predictor(bundle, batch_size=4)


# --- strategies --------------------------------------------------------------------------------------------

any_char = st.characters()  # no exclusions: control characters, unassigned code points and lone surrogates too
short_text = st.text(any_char, max_size=40)
# Long texts are short ones repeated (cheap to generate): thousands of characters, far beyond max_length tokens.
long_text = st.builds(lambda unit, n: (unit * n)[:8000], st.text(any_char, min_size=1, max_size=12) | st.just("wonderful "),
                      st.integers(300, 1000))
blank_text = st.text(st.sampled_from(" \t\n\r\x0b\x0c\x1c\x85\u00a0\u2028\u3000"), max_size=12)
text = short_text | long_text | blank_text
scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=16) | st.complex_numbers()
nested = st.recursive(scalar | short_text, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                      | st.dictionaries(short_text, inner, max_size=3), max_leaves=8)
pair = st.tuples(text, text) | st.lists(text, min_size=2, max_size=2)
item = text | scalar | nested | pair | st.lists(short_text, max_size=4) | st.tuples(short_text)


def valid(value: object) -> bool:
    """A string the tokenizer can take: anything but one with a lone surrogate (not encodable as UTF-8)."""
    return isinstance(value, str) and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def predictable(value: object) -> bool:
    """What must get a prediction: a valid string, or a pair (tuple or list) of two valid strings."""
    return valid(value) or (isinstance(value, (tuple, list)) and len(value) == 2 and all(map(valid, value)))


def check_result(value: object, result: object) -> None:
    assert isinstance(result, dict)
    json.dumps(result, allow_nan=False)  # plain JSON: it can be written out as it is
    if not predictable(value):
        assert set(result) == {"error"} and isinstance(result["error"], str) and result["error"], (value, result)
        return
    assert set(result) == {"label", "probabilities", "truncated"}, (value, result)
    probabilities = result["probabilities"]
    assert all(isinstance(p, float) and math.isfinite(p) and 0.0 <= p <= 1.0 for p in probabilities.values())
    assert math.fsum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert probabilities[result["label"]] == max(probabilities.values())
    assert isinstance(result["truncated"], bool)


# --- Predictor.predict -------------------------------------------------------------------------------------

@FUZZ
@given(items=st.lists(item, max_size=12))
def test_every_item_gets_one_result_in_order(predictor, items):
    results = predictor.predict(items)
    assert isinstance(results, list) and len(results) == len(items)
    for value, result in zip(items, results):
        check_result(value, result)


@settings(max_examples=10, deadline=None)
@given(container=st.sampled_from([list, tuple]))
def test_an_empty_batch_gives_no_results(predictor, container):
    assert predictor.predict(container()) == []


@FUZZ
@given(target=text | pair, others=st.lists(item, max_size=10), position=st.integers(0, 10))
def test_a_result_does_not_depend_on_its_batch(predictor, target, others, position):
    batch = others[:position] + [target] + others[position:]
    alone, = predictor.predict([target])
    together = predictor.predict(batch)[min(position, len(others))]
    check_result(target, alone)
    if "error" in alone:
        assert together == alone
        return
    assert together["truncated"] == alone["truncated"]
    for label, p in alone["probabilities"].items():
        assert together["probabilities"][label] == pytest.approx(p, abs=1e-5)
    if max(alone["probabilities"].values()) - min(alone["probabilities"].values()) > 1e-4:  # not a near-tie
        assert together["label"] == alone["label"]


def test_pairs_are_encoded_as_pairs_and_truncated_together(predictor):
    """A pair is not its first text, nor the two texts joined; two long texts are cut to max_length together."""
    a, b = "a wonderful film", "the plot was dull"
    pair_result, first, joined = predictor.predict([(a, b), a, f"{a} {b}"])
    assert pair_result["probabilities"] != first["probabilities"]
    assert pair_result["probabilities"] != joined["probabilities"]
    assert predictor.predict([[a, b]]) == [pair_result]  # a JSON list of two strings is the same pair
    long = predictor.predict([("wonderful " * 100, "dull " * 100)])[0]
    assert long["truncated"] is True and sum(long["probabilities"].values()) == pytest.approx(1.0)
    assert predictor.predict([(a, "\ud800")])[0]["error"].startswith("the second text")


def test_a_single_string_or_bytes_is_one_item(predictor):
    assert len(predictor.predict("a fine film")) == 1
    assert predictor.predict(b"bytes") == [{"error": "expected a string, got bytes"}]


# --- the JSONL path ----------------------------------------------------------------------------------------

json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                          | short_text, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
                          max_leaves=8)
text_field = text | pair | json_value
record = st.dictionaries(short_text, json_value, max_size=3)
huge_line = st.sampled_from([
    "[" * 50_000, "[" * 5_000 + "]" * 5_000, '{"a":' * 3_000, '{"text": ' + "[" * 20_000 + '"x"' + "]" * 20_000 + "}",
    "1" * 6_000, '{"id": ' + "9" * 5_000 + ', "text": "a"}', "-" + "7" * 4_400, "1e" + "9" * 5_000,
    json.dumps({"text": "wonderful " * 5_000}), json.dumps(["x"] * 10_000), '"' + "\\ud800" * 2_000 + '"'])
odd_line = st.sampled_from([
    "NaN", "Infinity", "-Infinity", '{"id": NaN, "text": "a"}', '{"text": Infinity}', '{"text": "\\ud800"}',
    '{"id": "\\udc00", "text": "ok"}', '{"id": "a\\u2028b\\u2029c\\u0085d", "text": "x"}', '{"text": "a"} trailing',
    '{"text": "a", "text": 3}', '"\\u0000"', "\ufeff" + '{"text": "bom"}', '{"label": "gold", "text": "a"}',
    '{"error": 1, "text": null}', '{"line": 3}', "[]", "{}", '""', '["a", "b"]', "true", "null", "0", "\x00", "\\"])
line = (st.builds(json.dumps, text_field) | st.builds(lambda r, t: json.dumps({**r, "text": t}), record, text_field)
        | st.builds(json.dumps, record) | st.builds(json.dumps, json_value) | short_text | long_text | blank_text
        | huge_line | odd_line)


def strict_json(text: str) -> object:
    """json.loads without Python's extensions: NaN and Infinity are not JSON."""
    def reject(constant: str):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=reject)


def check_output(out: str, expected: int) -> list[dict]:
    lines = out.splitlines()  # every line break Python knows: \x85, U+2028 and U+2029 included
    assert out.endswith("\n") or not out
    assert len(lines) == expected
    parsed = [strict_json(line) for line in lines]
    assert all(isinstance(p, dict) and (("error" in p) != ("label" in p)) for p in parsed)
    return parsed


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(line, max_size=12), batch_size=st.integers(1, 5))
def test_every_jsonl_line_gets_one_json_line(predictor, lines, batch_size):
    lines = [line.replace("\n", " ") for line in lines]  # one element per line, as a file gives them
    tagged = [json.dumps({"seq": i, "text": "film"}) if i % 4 == 3 else line for i, line in enumerate(lines)]
    out = io.StringIO()
    predict_lines(predictor, read_jsonl(tagged), out, batch_size)
    nonblank = [line for line in tagged if line.strip()]
    parsed = check_output(out.getvalue(), len(nonblank))
    for source, result in zip(nonblank, parsed):  # in order: each tagged line comes back where it was
        if source.startswith('{"seq"'):
            assert result["seq"] == json.loads(source)["seq"] and "label" in result


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.binary(max_size=30) | st.builds(lambda s: s.encode("utf-8", "surrogatepass"), line), max_size=8)
       .map(lambda parts: b"\n".join(parts)) | st.binary(max_size=200))
def test_any_bytes_on_stdin_give_one_json_line_per_line(predictor, data):
    """Invalid UTF-8 and any mix of \\n, \\r and \\r\\n: each line read, however bad, is answered."""
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="ascii")  # text_lines re-reads it as UTF-8, whatever the locale
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    predict_lines(predictor, read_jsonl(text_lines(stdin)), out, 3)
    out.seek(0)
    expected = [part for part in re.split(r"\r\n|\r|\n", data.decode("utf-8", "surrogateescape")) if part.strip()]
    check_output(out.buffer.getvalue().decode("utf-8"), len(expected))


def test_lines_json_cannot_hold_get_a_line_error(predictor):
    lines = ["[" * 50_000, "1" * 6_000, '{"id": NaN, "text": "a"}', '{"id": "\\udc00", "text": "ok"}']
    out = io.StringIO()
    predict_lines(predictor, read_jsonl(lines), out, 8)
    first, digits, nan, surrogate = check_output(out.getvalue(), 4)
    assert first["line"] == 1 and "nested too deeply" in first["error"]
    assert digits["line"] == 2 and "digits" in digits["error"]
    assert nan == {"line": 3, "error": "not valid JSON (NaN is not a JSON value)"}
    assert surrogate["id"] == "\udc00" and "label" in surrogate  # echoed as the \\udc00 escape, not a raw surrogate


def test_an_output_stream_that_cannot_encode_a_text_gets_escapes(predictor):
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    predict_lines(predictor, [({"text": "film 電影 \ud800"}, "film 電影"), ({"id": "\u2028"}, "fine")], out, 4)
    out.seek(0)
    lines = out.buffer.getvalue().decode("ascii").splitlines()
    assert [strict_json(line)["text"] for line in lines[:1]] == ["film 電影 \ud800"] and len(lines) == 2


def test_echoed_fields_nested_near_the_recursion_limit_still_give_one_line(predictor):
    """json can read a line a little more deeply nested than it can then write back: every depth gets its line."""
    limit = sys.getrecursionlimit()
    lines = ['{"id": ' + "[" * depth + "]" * depth + ', "text": "a"}' for depth in range(limit - 300, limit + 5)]
    out = io.StringIO()
    predict_lines(predictor, read_jsonl(lines), out, 64)
    written = out.getvalue().splitlines()
    assert len(written) == len(lines) and all(line.startswith(('{"id": [', '{"line": ', '{"error": ')) for line in written)
    deep = []
    for _ in range(2 * limit):
        deep = [deep]
    assert json.loads(json_line({"id": deep, "label": "positive"}, "utf-8")) == {
        "error": "the line's other fields are nested too deeply to write back"}
