"""Run an exported bundle with onnxruntime, tokenizers and numpy only: no torch, no transformers.

    from export.runtime import Predictor
    Predictor("bundle-dir", variant="int8_dynamic").predict(["a fine film", "", ("a premise", "a hypothesis")])

An item is a text, or a pair of texts (a tuple or list of two strings, for sentence-pair tasks).
Every item gets a result or a per-item error; nothing an item contains can crash the batch.
The bundle's manifest names the decoder (alembert.decoding) that turns outputs into results: a label
and probabilities, a score, or a token task's entities with character offsets into the text, e.g.
{"entity": "PER", "text": "Angela Merkel", "start": 0, "end": 13, "score": 0.98}; a token task's text
longer than max_length tokens is split into overlapping windows, not truncated.
On a device, copy this file, backends.py, providers.py, predict.py, export/__init__.py and
alembert/{__init__,errors,registry,decoding}.py (all torch-free); OpenVINO, when installed, is a second runtime.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from alembert.decoding import AGGREGATIONS, DECODERS, Encoded, Window, joined
from alembert.errors import fail
from export.backends import BACKENDS, DEFAULT, open_session

MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def read_manifest(bundle: Path) -> dict:
    if not bundle.is_dir():
        raise fail(f"bundle directory {bundle} does not exist", "pass a directory written by python -m export")
    path = bundle / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise fail(f"{bundle} has no {MANIFEST}", "pass a directory written by python -m export, or re-export it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise fail(f"{path} is corrupt ({err})", "re-export the bundle with python -m export") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("variants"), dict):
        raise fail(f"{path} has no 'variants' table", "re-export the bundle with python -m export")
    return manifest


def available_variants(manifest: dict) -> list[str]:
    return [name for name, entry in manifest["variants"].items() if isinstance(entry, dict) and "file" in entry]


def chosen_runtime(manifest: dict, variant: str | None, runtime: str, hint: str | None) -> tuple[str | None, str, str | None]:
    """(variant, runtime, hint) to run: "fastest" is the manifest's fastest where its runtime is installed, else
    onnxruntime's fastest variant; a runtime that is not installed falls back to onnxruntime, said in one line."""
    if variant == "fastest":
        best = manifest.get("fastest") or {}
        if best.get("runtime") in BACKENDS and BACKENDS[best["runtime"]].available():
            return best["variant"], best["runtime"], best.get("precision_hint")
        variant = manifest.get("fastest_variant")
    backend = BACKENDS[runtime]
    if not backend.available():
        print(f"alembert: runtime '{runtime}' is not installed ({backend.install}); using {DEFAULT}", file=sys.stderr)
        return variant, DEFAULT, None
    return variant, runtime, hint


def load_tokenizer(bundle: Path, max_length: int) -> tuple[Tokenizer, int]:
    """The bundle's fast tokenizer with truncation at `max_length`, and its padding id."""
    try:
        tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    except Exception as err:  # tokenizers raises a bare Exception for missing or malformed files
        raise fail(f"cannot read {bundle / TOKENIZER_FILE} ({str(err)[:200]})", "re-export the bundle with python -m export") from None
    tokenizer.no_padding()  # padding is done here per batch, so each row's real length stays known
    tokenizer.enable_truncation(max_length)
    return tokenizer, _pad_id(bundle, tokenizer)


def _pad_id(bundle: Path, tokenizer: Tokenizer) -> int:
    try:
        pad_token = json.loads((bundle / TOKENIZER_CONFIG).read_text(encoding="utf-8")).get("pad_token")
    except (OSError, json.JSONDecodeError):
        pad_token = None
    if isinstance(pad_token, dict):  # older configs store AddedToken objects
        pad_token = pad_token.get("content")
    pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
    return 0 if pad_id is None else pad_id


def item_problem(item: object, pairs: bool = True, pair_only: bool = False) -> str | None:
    """Why an item cannot be tokenized, or None when it can. Empty and whitespace-only text is valid; a pair is
    valid only where the task takes pairs (`pairs`); where it takes pairs only (a question and its context),
    both texts must be non-empty."""
    if pair_only:
        return pair_problem(item)
    if not pairs:
        return text_problem(item, "a string (this bundle's task takes one text, not a pair)")
    if not is_pair(item):
        return text_problem(item, "a string or a pair of two strings")
    for which, text in zip(("first", "second"), item):
        if problem := text_problem(text, "a string"):
            return f"the {which} text of the pair: {problem}"
    return None


def pair_problem(item: object) -> str | None:
    if not is_pair(item):
        return text_problem(item, "a (question, context) pair") or "expected a (question, context) pair, got one text"
    for which, text in zip(("question", "context"), item):
        if problem := text_problem(text, "a string"):
            return f"the {which}: {problem}"
        if not text.strip():
            return f"the {which} is empty"
    return None


def is_pair(item: object) -> bool:
    """A tuple, or a list (all JSON has), of exactly two items: a sentence pair, as text and text_pair in training."""
    return isinstance(item, (tuple, list)) and len(item) == 2


def text_problem(text: object, expected: str) -> str | None:
    if isinstance(text, (tuple, list)):  # say what length would have worked; a plain type name cannot
        return f"expected {expected}, got a {type(text).__name__} of {len(text)}"
    if not isinstance(text, str):
        return f"expected a string, got {type(text).__name__}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text is not valid Unicode (it contains a lone surrogate)"
    return None


class Predictor:
    """A bundle variant ready to run on text. `variant=None` takes the bundle's default (the fused fp32 graph);
    "fastest", the (runtime, variant, precision hint) the manifest measured fastest where it was built. `runtime` is
    "onnxruntime" or "openvino" (the optional extra; without it, onnxruntime runs instead); `precision_hint` is
    OpenVINO's ("f32", or "bf16" on CPUs with AMX or AVX-512-BF16).

    `aggregation` (first | average | max) is how a token task scores a word from its sub-tokens; `stride` is how
    many tokens consecutive windows of a long text share there (default: a quarter of a window). Both are
    ignored by sequence tasks, whose long texts are truncated instead. `provider` is onnxruntime's execution provider
    (cpu, cuda, tensorrt, openvino, coreml, directml, rocm; export.providers), the CPU when it is not installed."""

    def __init__(self, bundle: str | Path, variant: str | None = None, *, runtime: str = DEFAULT,
                 precision_hint: str | None = None, threads: int | None = None, batch_size: int = 32,
                 aggregation: str = "first", stride: int | None = None, provider: str = "cpu"):
        self.bundle = Path(bundle).expanduser()
        self.manifest = read_manifest(self.bundle)
        names = available_variants(self.manifest)
        variant, self.runtime, hint = chosen_runtime(self.manifest, variant, runtime, precision_hint)
        self.variant = variant or self.manifest.get("default_variant") or "fp32"
        if self.variant not in names:
            raise fail(f"bundle {self.bundle} has no variant '{self.variant}'", f"choose one of {', '.join(names)}")
        if aggregation not in AGGREGATIONS:
            raise fail(f"aggregation '{aggregation}' is unknown", f"use one of {', '.join(AGGREGATIONS)}")
        self.session = open_session(self.bundle / self.manifest["variants"][self.variant]["file"], self.runtime, threads, hint,
                                    provider)
        self.max_length = int(self.manifest.get("max_length", 128))
        self.tokenizer, self.pad_id = load_tokenizer(self.bundle, self.max_length)
        self.labels = list(self.manifest.get("labels") or [])
        self.decoder = DECODERS.get(decoder_name(self.manifest))
        if stride is None and self.manifest.get("doc_stride") is not None:
            stride = int(self.manifest["doc_stride"])  # the windows the model was trained on
        self.stride = window_stride(self.tokenizer, self.max_length, stride) if self.decoder.windowed else 0
        self.tokenizer.enable_truncation(self.max_length, stride=self.stride, strategy=self.decoder.truncation)
        self._untruncated = Tokenizer.from_str(self.tokenizer.to_str())  # measures questions (only_second cuts none)
        self._untruncated.no_truncation()
        self.options = {"aggregation": aggregation, "max_answer_length": int(self.manifest.get("max_answer_length", 30))}
        self.batch_size = max(1, batch_size)

    def predict(self, texts: Sequence[object] | str) -> list[dict]:
        """One dict per item (a text or a pair): the decoder's fields ({"label", "probabilities"}, {"score"} or
        {"entities", "windows"}) and "truncated", or {"error"}."""
        items = [texts] if isinstance(texts, (str, bytes)) else list(texts)  # list(bytes) would be a list of ints
        results: list[dict] = [{"error": problem} if (problem := self._problem(item)) else {} for item in items]
        valid = [i for i, result in enumerate(results) if not result]
        for start in range(0, len(valid), self.batch_size):
            chunk = valid[start:start + self.batch_size]
            inputs = [self._item(items[i]) for i in chunk]
            for index, result in zip(chunk, self._predict_batch(inputs)):
                results[index] = result
        return results

    def _item(self, item: object) -> str | tuple[str, str]:
        """A list pair, too, as a tuple; a question without the leading spaces training strips (QA windows)."""
        if not is_pair(item):
            return item
        first, second = item
        return (first.lstrip(), second) if self.decoder.pair_only else (first, second)

    def _problem(self, item: object) -> str | None:
        problem = item_problem(item, self.decoder.pairs, self.decoder.pair_only)
        if problem is None and self.decoder.truncation == "only_second":
            problem = self._question_problem(item[0])
        return problem

    def _question_problem(self, question: str) -> str | None:
        """Windows of the context need room beside the whole question (the tokenizer would abort otherwise)."""
        tokens = len(self._untruncated.encode(question.lstrip(), add_special_tokens=False).ids)
        room = self.max_length - self.tokenizer.num_special_tokens_to_add(True) - tokens
        if room <= self.stride:
            return (f"the question has {tokens} tokens: windows of {self.max_length} leave its context {max(room, 0)}, "
                    f"not more than the stride {self.stride}; shorten the question, or lower the stride")
        return None

    def _predict_batch(self, texts: list[str | tuple[str, str]]) -> list[dict]:
        # encode_batch reads a tuple as a pair: one sequence, segments by type id, truncated together (longest first)
        encodings = self.tokenizer.encode_batch(texts)
        windows = [[e, *e.overflowing] if self.decoder.windowed else [e] for e in encodings]
        flat = [window for item in windows for window in item]
        rows = [row for start in range(0, len(flat), self.batch_size) for row in self._run(flat[start:start + self.batch_size])]
        results, used = [], 0
        for text, item in zip(texts, windows):
            results.append(self._result(text, item, rows[used:used + len(item)]))
            used += len(item)
        return results

    def _run(self, encodings: list) -> np.ndarray:
        """The model's outputs for encodings padded to the longest of them, in float64."""
        width = max(len(e.ids) for e in encodings)
        feed = {"input_ids": np.full((len(encodings), width), self.pad_id, dtype=np.int64),
                "attention_mask": np.zeros((len(encodings), width), dtype=np.int64),
                "token_type_ids": np.zeros((len(encodings), width), dtype=np.int64)}
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            feed["input_ids"][row, :length] = encoding.ids
            feed["attention_mask"][row, :length] = 1
            feed["token_type_ids"][row, :length] = encoding.type_ids
        return joined(self.session.run(feed)).astype(np.float64)

    def _result(self, text: str | tuple[str, str], windows: list, rows: list[np.ndarray]) -> dict:
        encoded = Encoded(text, tuple(Window.of(window) for window in windows), self.stride)
        outputs = rows if self.decoder.windowed else rows[0]
        truncated = not self.decoder.windowed and bool(windows[0].overflowing)  # windows cut nothing
        return {**self.decoder(outputs, self.labels, encoded, **self.options), "truncated": truncated}


def window_stride(tokenizer: Tokenizer, max_length: int, stride: int | None) -> int:
    """Tokens consecutive windows share: `stride`, or a quarter of a window's room for text; it must leave room."""
    room = max_length - tokenizer.num_special_tokens_to_add(False)
    chosen = room // 4 if stride is None else stride
    if not 0 <= chosen < room:
        raise fail(f"stride={stride} does not fit windows of {max_length} tokens ({room} of them text)",
                   f"use a stride from 0 to {room - 1}")
    return chosen


def decoder_name(manifest: dict) -> str:
    """The task's decoder the manifest names; bundles from before format 2 say only their problem_type."""
    return manifest.get("decoder") or ("score" if manifest.get("problem_type") == "regression" else "softmax")
