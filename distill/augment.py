"""Transfer-set augmentation, by `augment.method`: TinyBERT's masked-LM word replacement ("mlm", this module) or
Tang et al.'s masking, embedding-neighbour replacement and n-gram sampling ("tang", distill/augment_tang.py).

For every word of a sentence, TinyBERT masks the word, asks a masked-LM for its top-k predictions and, with
probability `replace_prob`, swaps the word for one of them drawn uniformly. Here:
- a word is a whole word of the tokenizer's pre-tokenisation: a word of several WordPieces is masked as one
  [MASK] and replaced by one whole-word prediction (TinyBERT falls back to GloVe neighbours there; a
  masked-LM prediction needs no second model);
- candidates are predicted from the *original* sentence with only that word masked, so one forward per
  replaced word serves every variant of the sentence;
- only alphabetic words are replaced (punctuation and numbers stay), and a word is never replaced by itself;
- every variant replaces at least one word, so variants differ from the original whenever a word can change;
- labels are kept: the teacher's soft targets on the new sentence are what the student learns from.
The result is deterministic in `seed`: each example draws from its own generator seeded by (seed, position).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from alembert.data import Example
from alembert.config import bounded, one_of
from alembert.errors import fail
from alembert.modeldir import load_classifier, load_masked_lm, load_tokenizer, resolve_source
from alembert.registry import Registry
from distill.augment_tang import tang_augment, whole_words



METHODS = Registry("augmentation method")  # name -> fn(config, examples, teacher source) -> augmented examples


@dataclass(frozen=True)
class AugmentConfig:
    """Transfer-set augmentation settings.

    method=mlm (TinyBERT: n_per_example=20, replace_prob=0.4, top_k=15) needs `mlm`, a directory (or hub id) of a
    model with its masked-LM head. method=tang (Tang et al.: n_per_example=20, mask_prob=0.1, neighbour_prob=0.1,
    ngram_prob=0.25, max_ngram=5) reads the input embeddings of `mlm` when set, else of the teacher.
    """

    enabled: bool = False
    method: str = one_of("mlm", METHODS.names)  # mlm | tang
    mlm: str | None = None
    n_per_example: int = bounded(4, low=1)
    replace_prob: float = bounded(0.4, low=0.0, high=1.0)
    top_k: int = bounded(15, low=1)
    mask_prob: float = bounded(0.1, low=0.0, high=1.0)
    neighbour_prob: float = bounded(0.1, low=0.0, high=1.0)
    ngram_prob: float = bounded(0.25, low=0.0, high=1.0)
    max_ngram: int = bounded(5, low=1)
    seed: int = bounded(0, low=0)
    max_length: int = bounded(128, low=2)
    keep_original: bool = True

    def __post_init__(self):
        if self.mask_prob + self.neighbour_prob > 1.0:
            raise fail(f"augment.mask_prob={self.mask_prob} and neighbour_prob={self.neighbour_prob} sum above 1",
                       "Tang et al. use 0.1 each")


@dataclass(frozen=True)
class _Word:
    first_token: int
    end_token: int  # exclusive
    start_char: int
    end_char: int
    text: str


def augment_with(config: AugmentConfig, examples: list[Example], *, teacher: str | None = None) -> list[Example]:
    """`examples` (the training split, normally) augmented by config.method; `teacher` names the teacher model."""
    if not config.enabled:
        return list(examples)
    return METHODS.get(config.method)(config, examples, teacher)


def _mlm_method(config: AugmentConfig, examples: list[Example], teacher: str | None) -> list[Example]:
    if config.mlm is None:
        raise fail("augmentation needs a masked-LM model", "set augment.mlm=/path/to/mlm-model (the packaged MiniLM has no "
                   "MLM head), or use augment.method=tang, which needs none")
    source = resolve_source(config.mlm)
    return augment(examples, load_masked_lm(source), load_tokenizer(source), n_per_example=config.n_per_example,
                   replace_prob=config.replace_prob, top_k=config.top_k, seed=config.seed, max_length=config.max_length,
                   keep_original=config.keep_original)


def _tang_method(config: AugmentConfig, examples: list[Example], teacher: str | None) -> list[Example]:
    if config.mlm is None and teacher is None:
        raise fail("Tang augmentation needs a model for its embedding neighbours", "set augment.mlm=DIR or give a teacher")
    source = resolve_source(config.mlm or teacher)
    table = load_classifier(source)[0].get_input_embeddings().weight.detach()
    return tang_augment(examples, table, load_tokenizer(source), config)


METHODS.add("mlm", _mlm_method)
METHODS.add("tang", _tang_method)


def augment(examples: list[Example], mlm_model: PreTrainedModel, tokenizer, *, n_per_example: int = 4,
            replace_prob: float = 0.4, top_k: int = 15, seed: int = 0, max_length: int = 128,
            keep_original: bool = True) -> list[Example]:
    """Each example (if `keep_original`) followed by its `n_per_example` variants, labels unchanged."""
    _check_settings(n_per_example, replace_prob, top_k)
    if tokenizer.mask_token_id is None or not tokenizer.is_fast:
        raise fail("augmentation needs a fast tokenizer with a mask token", "use the masked-LM model's own tokenizer")
    if mlm_model.config.vocab_size < len(tokenizer):
        raise fail(f"the masked-LM knows {mlm_model.config.vocab_size} tokens but its tokenizer {len(tokenizer)}",
                   "use the tokenizer saved with the masked-LM model")
    mlm_model.eval()
    allowed, strings = whole_words(tokenizer, mlm_model.config.vocab_size)
    replacer = _Replacer(mlm_model, tokenizer, allowed, strings, top_k, max_length)
    out: list[Example] = []
    for index, example in enumerate(tqdm(examples, desc="augment", leave=False, dynamic_ncols=True)):
        rng = random.Random(seed * 1_000_003 + index)
        texts = replacer.variants(example.text, rng, n_per_example, replace_prob)
        pairs = (replacer.variants(example.text_pair, rng, n_per_example, replace_prob) if example.text_pair is not None
                 else [None] * n_per_example)
        if keep_original:
            out.append(example)
        out.extend(Example(text, pair, example.label) for text, pair in zip(texts, pairs))
    return out


def _check_settings(n_per_example: int, replace_prob: float, top_k: int) -> None:
    if n_per_example < 1:
        raise fail(f"augment.n_per_example={n_per_example} must be at least 1", "TinyBERT makes 20 variants per example")
    if not 0.0 <= replace_prob <= 1.0:
        raise fail(f"augment.replace_prob={replace_prob} is outside [0, 1]", "TinyBERT replaces each word with probability 0.4")
    if top_k < 1:
        raise fail(f"augment.top_k={top_k} must be at least 1", "TinyBERT draws from the top 15 predictions")


class _Replacer:
    """Finds a sentence's words, predicts replacement candidates for the chosen ones, and writes the variants."""

    def __init__(self, model: PreTrainedModel, tokenizer, allowed: torch.Tensor, strings: list[str], top_k: int,
                 max_length: int):
        self.model, self.tokenizer, self.allowed, self.strings = model, tokenizer, allowed, strings
        self.top_k, self.max_length = top_k, max_length

    def variants(self, text: str, rng: random.Random, n: int, replace_prob: float) -> list[str]:
        ids, words = self._words(text)
        if not words:
            return [text] * n
        choices = []
        for _ in range(n):
            chosen = [w for w in range(len(words)) if rng.random() < replace_prob] or [rng.randrange(len(words))]
            choices.append(chosen)
        needed = sorted({w for chosen in choices for w in chosen})
        candidates = dict(zip(needed, self._candidates(ids, [words[w] for w in needed])))
        return [self._apply(text, words, {w: rng.choice(candidates[w]) for w in chosen if candidates[w]}) for chosen in choices]

    def _words(self, text: str) -> tuple[list[int], list[_Word]]:
        encoding = self.tokenizer(text, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        spans: dict[int, list[int]] = {}
        for position, word_id in enumerate(encoding.word_ids()):
            if word_id is not None:
                spans.setdefault(word_id, []).append(position)
        if len(encoding["input_ids"]) >= self.max_length and spans:
            spans.pop(max(spans))  # the last word may have lost pieces to truncation
        offsets = encoding["offset_mapping"]
        words = []
        for positions in spans.values():
            start, end = offsets[positions[0]][0], offsets[positions[-1]][1]
            if text[start:end].isalpha():
                words.append(_Word(positions[0], positions[-1] + 1, start, end, text[start:end]))
        return encoding["input_ids"], words

    @torch.no_grad()
    def _candidates(self, ids: list[int], words: list[_Word]) -> list[list[str]]:
        """Top-k whole-word predictions for each word, masked alone (as one [MASK]) in the original sentence."""
        rows = [ids[:w.first_token] + [self.tokenizer.mask_token_id] + ids[w.end_token:] for w in words]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float().cpu()
        at_mask = logits[torch.arange(len(words)), torch.tensor([w.first_token for w in words])]
        at_mask = at_mask.masked_fill(~self.allowed, -torch.inf)
        result = []
        for word, scores in zip(words, at_mask):
            ranked = scores.topk(min(self.top_k + 1, int(self.allowed.sum()))).indices.tolist()
            options = [self.strings[i] for i in ranked if self.strings[i].lower() != word.text.lower()][: self.top_k]
            result.append(options)
        return result

    @staticmethod
    def _apply(text: str, words: list[_Word], replacements: dict[int, str]) -> str:
        """Swap the chosen words' characters, right to left so earlier offsets stay valid; keep a capital initial."""
        for index in sorted(replacements, reverse=True):
            word, new = words[index], replacements[index]
            if word.text[0].isupper():
                new = new[0].upper() + new[1:]
            text = text[:word.start_char] + new + text[word.end_char:]
        return text
