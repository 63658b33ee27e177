"""Torch-free output decoders for the ONNX runtime: each task names one (Task.decoder), the bundle's manifest
records it, and the runtime looks it up here instead of branching on the task.

A decoder maps one item's model outputs (numpy), the label names and the item's encoding (its text, and per
model input its tokens' character offsets and word ids) to the result fields of one prediction. Flags on the
registration say what the runtime must do for it: `windowed` decoders get a text longer than max_length tokens
as several overlapping windows (one output row each) instead of one truncated row; `pairs=False` decoders take
single texts only.

    DECODERS["softmax"](logits_row, labels)                         # {"label", "probabilities"}
    DECODERS["entities"](rows, labels, encoded, aggregation="max")  # {"entities": [...], "windows"}
    DECODERS["span"](rows, labels, encoded)                         # {"answer", "start", "end", "score", "windows"}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alembert.registry import Registry

AGGREGATIONS = ("first", "average", "max")  # how sub-token scores become a word's, as in transformers' NER pipeline


@dataclass(frozen=True)
class Window:
    """One model input of an item, as the tokenizer gave it: per token its (start, end) characters in the text,
    its word (from the tokenizer's pre-tokenization; None for special tokens) and whether it is a special token."""

    offsets: Sequence[tuple[int, int]]
    word_ids: Sequence[int | None]
    special: Sequence[bool]
    sequence: Sequence[int | None] = ()  # per token: 0 first text, 1 second (a pair's), None special

    @classmethod
    def of(cls, encoding) -> Window:
        """From a `tokenizers.Encoding` (or anything with the same attributes)."""
        return cls(tuple(encoding.offsets), tuple(encoding.word_ids), tuple(bool(s) for s in encoding.special_tokens_mask),
                   tuple(getattr(encoding, "sequence_ids", ())))


@dataclass(frozen=True)
class Encoded:
    """An item as the model saw it: its text (or pair), its windows in order, and how many tokens consecutive
    windows share (`stride`; windows after the first repeat the last `stride` content tokens of the one before)."""

    text: str | tuple[str, str]
    windows: tuple[Window, ...]
    stride: int = 0


@dataclass(frozen=True)
class Decoder:
    """A registered decoder: `decode(outputs, labels, encoded, **options) -> result fields`, and what it needs.

    `outputs` is the item's one output row for a decoder that is not windowed, else one row per window (each
    [tokens, tags], possibly padded beyond the window's tokens). Options a decoder does not use are ignored."""

    decode: Callable[..., dict]
    windowed: bool = False
    pairs: bool = True
    pair_only: bool = False  # items must be pairs (a span task's question and context), each text non-empty
    truncation: str = "longest_first"  # tokenizers' strategy; "only_second" windows a pair's second text only

    def __call__(self, outputs, labels: Sequence[str], encoded: Encoded | None = None, **options) -> dict:
        return self.decode(outputs, labels, encoded, **options)


DECODERS: Registry[Decoder] = Registry("output decoder")


def joined(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """A graph's outputs as one array, as Task.output_logits stacks them: one output as it is, several (start and
    end logits) stacked on a new last axis."""
    return outputs[0] if len(outputs) == 1 else np.stack(outputs, axis=-1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (one row or many)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _names(labels: Sequence[str], count: int) -> list[str]:
    return list(labels) if len(labels) == count else [str(i) for i in range(count)]


def _label_distribution(logits: np.ndarray, labels: Sequence[str], encoded: Encoded | None = None, **options) -> dict:
    probabilities = softmax(logits)
    names = _names(labels, len(probabilities))
    return {"label": names[int(probabilities.argmax())],
            "probabilities": {name: float(p) for name, p in zip(names, probabilities)}}


def _score(logits: np.ndarray, labels: Sequence[str], encoded: Encoded | None = None, **options) -> dict:
    return {"score": float(logits[0])}


# --- token classification: windows -> tokens -> words -> entities --------------------------------------------

@dataclass(frozen=True)
class Token:
    start: int
    end: int
    word: int | None
    probabilities: np.ndarray


@dataclass(frozen=True)
class Word:
    start: int
    end: int
    tag: str
    score: float


def merge_windows(rows: Sequence[np.ndarray], encoded: Encoded) -> list[Token]:
    """The text's content tokens in order, each scored by the window where it has the most context on both sides
    (a token at a window's cut edge is taken from the next window instead); special tokens are dropped."""
    best: dict[int, tuple[int, Token]] = {}
    base, last = 0, len(encoded.windows) - 1
    for number, (row, window) in enumerate(zip(rows, encoded.windows)):
        content = [i for i, special in enumerate(window.special) if not special]
        probabilities = softmax(np.asarray(row, dtype=np.float64)[: len(window.offsets)])
        for j, i in enumerate(content):
            margin = min(j if number > 0 else len(content), len(content) - 1 - j if number < last else len(content))
            start, end = window.offsets[i]
            if base + j not in best or margin > best[base + j][0]:
                best[base + j] = (margin, Token(int(start), int(end), window.word_ids[i], probabilities[i]))
        base += max(len(content) - encoded.stride, 1)
    return [token for _, (_, token) in sorted(best.items())]


def words_of(tokens: Sequence[Token]) -> list[list[Token]]:
    """Consecutive tokens of one word (by word id) grouped; a token without a word id is a word of its own."""
    groups: list[list[Token]] = []
    for token in tokens:
        if groups and token.word is not None and groups[-1][-1].word == token.word:
            groups[-1].append(token)
        else:
            groups.append([token])
    return groups


def aggregate(pieces: Sequence[Token], names: Sequence[str], strategy: str) -> Word:
    """A word's tag and score from its sub-tokens: the first's (`first`), the mean distribution (`average`),
    or the most confident sub-token's (`max`), as transformers' token-classification pipeline does."""
    if strategy == "first":
        scores = pieces[0].probabilities
    elif strategy == "average":
        scores = np.mean([piece.probabilities for piece in pieces], axis=0)
    elif strategy == "max":
        scores = max(pieces, key=lambda piece: float(piece.probabilities.max())).probabilities
    else:
        raise ValueError(f"aggregation '{strategy}' is not one of {', '.join(AGGREGATIONS)}")
    best = int(np.argmax(scores))
    return Word(pieces[0].start, pieces[-1].end, names[best], float(scores[best]))


def split_tag(tag: str) -> tuple[str, str]:
    """("B" | "I" | "E" | "S" | "O", entity type). BILOU's L and U read as E and S; a bare type (IO tags) as I."""
    if tag == "O" or not tag:
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESLU":
        return {"L": "E", "U": "S"}.get(tag[0], tag[0]), tag[2:]
    return "I", tag


def group_entities(words: Sequence[Word], text: str) -> list[dict]:
    """Words tagged B-/I-/E-/S- (IOB2, BIOES) as entities with character offsets into `text`.

    An I- or E- word continues an open entity of its type and opens one otherwise (as seqeval's default mode
    reads it); B- and S- always open one; S-, E- and O close it. An entity's score is the mean of its words'."""
    entities: list[dict] = []
    current: list[Word] = []
    kind = ""

    def close() -> None:
        nonlocal current, kind
        if current:
            start, end = current[0].start, current[-1].end
            entities.append({"entity": kind, "text": text[start:end], "start": start, "end": end,
                             "score": float(np.mean([w.score for w in current]))})
        current, kind = [], ""

    for word in words:
        prefix, tag_type = split_tag(word.tag)
        if prefix == "O":
            close()
            continue
        if prefix in ("B", "S") or tag_type != kind:
            close()
        current.append(word)
        kind = tag_type
        if prefix in ("S", "E"):
            close()
    close()
    return entities


def _entities(rows: Sequence[np.ndarray], labels: Sequence[str], encoded: Encoded, *, aggregation: str = "first",
              **options) -> dict:
    tokens = merge_windows(rows, encoded)
    names = _names(labels, int(np.shape(rows[0])[-1])) if len(rows) else list(labels)
    words = [aggregate(pieces, names, aggregation) for pieces in words_of(tokens)]
    return {"entities": group_entities(words, encoded.text), "windows": len(encoded.windows)}


# --- extractive QA: the best answer span over all windows ---------------------------------------------------

N_BEST = 20  # start and end candidates per window, as in the transformers QA examples
MAX_ANSWER_TOKENS = 30


@dataclass(frozen=True)
class Span:
    start: int  # characters into the context
    end: int
    logit: float  # start + end logit: what ranks spans across windows
    score: float  # start x end probability within its window's context


def best_span(rows: Sequence[np.ndarray], contexts: Sequence[Sequence[tuple[int, int] | None]], *,
              n_best: int = N_BEST, max_answer_tokens: int = MAX_ANSWER_TOKENS) -> Span | None:
    """The highest-scoring valid span over the windows of one question: `rows` are each window's [tokens, 2] start
    and end logits, `contexts` each window's per-token character offsets into the context (None off the context).
    A span starts and ends on context tokens, ends at or after its start and is at most `max_answer_tokens` long;
    only each window's `n_best` starts and ends are paired."""
    best = None
    for row, offsets in zip(rows, contexts):
        inside = np.array([i for i, offset in enumerate(offsets) if offset is not None], dtype=np.int64)
        if not len(inside):
            continue
        start_logits, end_logits = np.asarray(row, dtype=np.float64)[inside, 0], np.asarray(row, dtype=np.float64)[inside, 1]
        start_p, end_p = softmax(start_logits), softmax(end_logits)
        for s in np.argsort(-start_logits, kind="stable")[:n_best]:
            for e in np.argsort(-end_logits, kind="stable")[:n_best]:
                first, last = int(inside[s]), int(inside[e])
                if last < first or last - first + 1 > max_answer_tokens:
                    continue
                logit = float(start_logits[s] + end_logits[e])
                if best is None or logit > best.logit:
                    best = Span(int(offsets[first][0]), int(offsets[last][1]), logit, float(start_p[s] * end_p[e]))
    return best


def context_offsets(window: Window) -> list[tuple[int, int] | None]:
    """A pair window's per-token offsets into its second text (the context), None elsewhere."""
    return [offset if sequence == 1 else None for offset, sequence in zip(window.offsets, window.sequence)]


def _answer(rows: Sequence[np.ndarray], labels: Sequence[str], encoded: Encoded, *,
            max_answer_length: int = MAX_ANSWER_TOKENS, **options) -> dict:
    context = encoded.text[1]
    span = best_span(rows, [context_offsets(w) for w in encoded.windows], max_answer_tokens=max_answer_length)
    if span is None:
        return {"answer": "", "start": 0, "end": 0, "score": 0.0, "windows": len(encoded.windows)}
    return {"answer": context[span.start:span.end], "start": span.start, "end": span.end, "score": span.score,
            "windows": len(encoded.windows)}


DECODERS.add("softmax", Decoder(_label_distribution))
DECODERS.add("score", Decoder(_score))
DECODERS.add("entities", Decoder(_entities, windowed=True, pairs=False))
DECODERS.add("span", Decoder(_answer, windowed=True, pair_only=True, truncation="only_second"))
