"""Tang et al. (2019)'s transfer-set augmentation for small students, with no second model.

Each variant of a sentence walks its words: with probability `mask_prob` a word becomes the tokenizer's mask
token, with `neighbour_prob` it becomes one of its `top_k` nearest words in the teacher's input-embedding space
(cosine; Tang swaps a word for another of the same part of speech, which needs a tagger: embedding neighbours
are the model-free stand-in the issue asks for); otherwise it stays. Then, with probability `ngram_prob`, only a
random n-gram of the result is kept, n drawn from 1..`max_ngram` (single texts only: cutting one side of a pair
would change what the pair means). Variants equal to the original or to an earlier variant are dropped, so an
example yields at most `n_per_example`. Labels stay: the teacher's soft targets on each variant are what the
student learns. Deterministic in `seed`: each example draws from its own generator seeded by (seed, position).
"""

from __future__ import annotations

import random
import re

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from alembert.data import Example
from alembert.errors import fail

WORD = re.compile(r"\S+")
CHUNK = 4096  # neighbour search: words scored against the vocabulary this many at a time
BPE_WORD_MARKERS = ("Ġ", "▁")  # byte-level BPE and SentencePiece mark the start of a word


def tang_augment(examples: list[Example], table: torch.Tensor, tokenizer, config) -> list[Example]:
    """Each example (if config.keep_original) followed by its distinct variants; `table` is the teacher's input
    embeddings, `config` an AugmentConfig."""
    if tokenizer.mask_token is None:
        raise fail("Tang augmentation needs a tokenizer with a mask token", "use a BERT-style teacher, or augment.method=mlm")
    words = sorted({word for e in examples for text in (e.text, e.text_pair) if text for word in WORD.findall(text)
                    if word.isalpha()})
    neighbours = nearest_words(words, table, tokenizer, config.top_k)
    out: list[Example] = []
    for index, example in enumerate(tqdm(examples, desc="augment (tang)", leave=False, dynamic_ncols=True)):
        rng = random.Random(config.seed * 1_000_003 + index)
        seen = {(example.text, example.text_pair)}
        if config.keep_original:
            out.append(example)
        for _ in range(2 * config.n_per_example):  # a budget of draws: short texts repeat themselves
            text = _variant(example.text, rng, neighbours, tokenizer.mask_token, config, cut=example.text_pair is None)
            pair = None if example.text_pair is None else _variant(example.text_pair, rng, neighbours,
                                                                   tokenizer.mask_token, config, cut=False)
            if (text, pair) not in seen:
                seen.add((text, pair))
                out.append(Example(text, pair, example.label))
            if len(seen) > config.n_per_example:
                break
    return out


def _variant(text: str, rng: random.Random, neighbours: dict[str, list[str]], mask: str, config, *, cut: bool) -> str:
    words = WORD.findall(text)
    changed = []
    for word in words:
        draw = rng.random()
        if draw < config.mask_prob:
            changed.append(mask)
        elif draw < config.mask_prob + config.neighbour_prob and neighbours.get(word.lower()):
            new = rng.choice(neighbours[word.lower()])
            changed.append(new[0].upper() + new[1:] if word[0].isupper() else new)
        else:
            changed.append(word)
    if cut and changed and rng.random() < config.ngram_prob:
        n = min(rng.randint(1, config.max_ngram), len(changed))
        start = rng.randrange(len(changed) - n + 1)
        changed = changed[start:start + n]
    return " ".join(changed)


def whole_words(tokenizer, width: int) -> tuple[torch.Tensor, list[str]]:
    """Which of `width` ids are whole alphabetic words (not specials, not word pieces), and each id's text."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    marker = next((m for m in BPE_WORD_MARKERS if any(t.startswith(m) for t in tokens)), None)
    special = set(tokenizer.all_special_ids)
    allowed = torch.zeros(width, dtype=torch.bool)
    strings = []
    for index, token in enumerate(tokens[:width]):
        text = tokenizer.convert_tokens_to_string([token]).strip()
        strings.append(text)
        starts_word = token.startswith(marker) if marker else not token.startswith("##")
        allowed[index] = index not in special and starts_word and text.isalpha()
    return allowed, strings


@torch.no_grad()
def nearest_words(words: list[str], table: torch.Tensor, tokenizer, k: int) -> dict[str, list[str]]:
    """Each word's `k` nearest vocabulary words by cosine in `table`: a word of several pieces is their mean."""
    allowed, strings = whole_words(tokenizer, table.shape[0])
    ids = allowed.nonzero().squeeze(-1)
    if not len(ids) or not words:
        return {}
    texts = [strings[i] for i in ids.tolist()]
    vocabulary = F.normalize(table[ids].float(), dim=-1)
    lowered = sorted({word.lower() for word in words})
    pieces = tokenizer(lowered, add_special_tokens=False)["input_ids"]
    result: dict[str, list[str]] = {}
    for start in range(0, len(lowered), CHUNK):
        batch = [(word, piece) for word, piece in zip(lowered[start:start + CHUNK], pieces[start:start + CHUNK]) if piece]
        if not batch:
            continue
        queries = F.normalize(torch.stack([table[torch.tensor(piece)].float().mean(0) for _, piece in batch]), dim=-1)
        ranked = (queries @ vocabulary.T).topk(min(k + 1, len(ids)), dim=-1).indices.tolist()
        for (word, _), row in zip(batch, ranked):
            result[word] = [texts[i] for i in row if texts[i].lower() != word][:k]
    return result
