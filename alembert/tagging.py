"""Token tagging data: CoNLL column files, tag schemes, and word-to-sub-token alignment.

Torch-free and tokenizer-agnostic: the token-classification task (alembert/tasks/token_classification.py)
calls these, and so can a user preparing files.

CoNLL files: one token per line, the token first and its tag last, columns separated by spaces or tabs,
a blank line between sentences, `-DOCSTART-` lines skipped. IOB1 tags are rewritten as IOB2 on reading
(an `I-X` that opens an entity becomes `B-X`); IOB2 and BIOES are read as they are, since that rewrite
changes nothing in them.
"""

from __future__ import annotations

from pathlib import Path

from alembert.errors import fail
from alembert.tables import read_text

IGNORED = -100  # the label of positions no loss or metric reads (padding, special tokens, continuation pieces)


def read_conll(path: Path, encoding: str = "utf-8") -> list[tuple]:
    """(words, None, tags, where) rows of a CoNLL file; `where` names the file and the sentence's first line."""
    if not path.is_file():
        raise fail(f"data file {path} does not exist", "check data.train/data.dev/data.test")
    rows, words, tags, start, columns = [], [], [], 0, None
    for number, line in enumerate(read_text(path, encoding).splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                rows.append((tuple(words), None, tuple(tags), f"data file {path} line {start}"))
            words, tags = [], []
            continue
        if len(fields) < 2:
            raise fail(f"data file {path} line {number} has one column ('{line.strip()}') but needs a token and a tag",
                       "write the token first and its tag last on each line, separated by spaces or tabs")
        columns = columns or len(fields)
        if len(fields) != columns:
            raise fail(f"data file {path} line {number} has {len(fields)} columns but earlier lines have {columns}",
                       "give every token line the same columns (the token first, the tag last)")
        start = start if words else number
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        rows.append((tuple(words), None, tuple(tags), f"data file {path} line {start}"))
    return rows


def to_iob2(tags) -> tuple[str, ...]:
    """IOB1 -> IOB2: an I-X that does not continue an X entity opens one. A no-op on IOB2 and BIOES tags."""
    fixed, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        fixed.append(tag)
        previous = tag
    return tuple(fixed)


def scheme_of(tag_names) -> str:
    """seqeval's strict-mode scheme for a tag set: IOBES when it has S- or E- tags, else IOB2."""
    return "IOBES" if any(str(tag).startswith(("S-", "E-")) for tag in tag_names) else "IOB2"


def entity_types(tag_names) -> tuple[str, ...]:
    return tuple(sorted({tag[2:] for tag in tag_names if len(tag) > 2 and tag[1] == "-"}))


def word_chunks(piece_counts: list[int], room: int) -> list[tuple[int, int]]:
    """[start, end) word ranges whose sub-tokens fit in `room`, split only between words.

    A word longer than `room` on its own gets a chunk to itself (the tokenizer then truncates it)."""
    chunks, start, used = [], 0, 0
    for index, count in enumerate(piece_counts):
        if used and used + count > room:
            chunks.append((start, index))
            start, used = index, 0
        used += count
    chunks.append((start, len(piece_counts)))
    return chunks


def align_labels(word_ids: list[int | None], tag_ids: list[int], *, all_pieces: bool,
                 continuation: dict[int, int]) -> list[int]:
    """One label per sub-token: the word's tag on its first piece, IGNORED on special tokens and, unless
    `all_pieces`, on the word's other pieces. With `all_pieces` those carry the tag, a B-X turned into its I-X
    (`continuation` maps tag ids) so that a word does not open an entity per piece."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORED)
        elif word != previous:
            labels.append(tag_ids[word])
        else:
            labels.append(continuation.get(tag_ids[word], tag_ids[word]) if all_pieces else IGNORED)
        previous = word
    return labels


def continuation_ids(tag_names: tuple[str, ...]) -> dict[int, int]:
    """B-X id -> I-X id, for the tags that have both."""
    index = {name: i for i, name in enumerate(tag_names)}
    return {i: index["I-" + name[2:]] for i, name in enumerate(tag_names) if name.startswith("B-") and "I-" + name[2:] in index}
