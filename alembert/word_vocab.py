"""A word-level vocabulary built from the transfer set (`student.tokenizer=words`), for the small students.

Tang et al.'s BiLSTM reads words, not word pieces: one embedding row per word of the task, none for the 30k pieces
of a general vocabulary. The tokenizer is built with `tokenizers`' WordLevel trainer over the transfer set's texts,
with the teacher tokenizer's normalizer and pre-tokenizer (so "Don't!" splits, and is lower-cased, as the teacher
sees it) and its special tokens, so the saved `tokenizer.json` loads in plain tokenizers and the torch-free runtime.
A word outside the vocabulary encodes to the teacher's UNK token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.processors import TemplateProcessing
from tokenizers.trainers import WordLevelTrainer
from transformers import PreTrainedTokenizerFast

from alembert.config import bounded
from alembert.errors import fail

WORDS = "words"  # the student.tokenizer value that asks for this vocabulary
SPECIAL_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")


@dataclass(frozen=True)
class WordVocabConfig:
    """The most frequent `max_size` words (special tokens included) that occur at least `min_count` times."""

    max_size: int = bounded(30000, low=8)
    min_count: int = bounded(1, low=1)


def example_texts(examples) -> Iterator[str]:
    """Every text of `examples` (alembert.data.Example): the sentence, and the second one of a pair."""
    for example in examples:
        yield example.text
        if example.text_pair:
            yield example.text_pair


def word_tokenizer(texts: Iterable[str], teacher_tokenizer, config: WordVocabConfig) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `texts`, splitting and normalising as `teacher_tokenizer` does, with its special
    tokens first (ids 0, 1, ...) and a [CLS] $A [SEP] template where the teacher has those tokens."""
    backend = getattr(teacher_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise fail("student.tokenizer=words needs the teacher's fast (tokenizers-backed) tokenizer",
                   "save the teacher with a tokenizer.json, or give student.tokenizer a directory")
    roles = {role: getattr(teacher_tokenizer, role) for role in SPECIAL_ROLES if getattr(teacher_tokenizer, role, None)}
    if "unk_token" not in roles or "pad_token" not in roles:
        raise fail("student.tokenizer=words needs a teacher tokenizer with UNK and padding tokens",
                   "give student.tokenizer a directory holding a tokenizer instead")
    specials = list(dict.fromkeys(roles.values()))
    tokenizer = Tokenizer(WordLevel(unk_token=roles["unk_token"]))
    if backend.normalizer is not None:
        tokenizer.normalizer = backend.normalizer
    if backend.pre_tokenizer is not None:
        tokenizer.pre_tokenizer = backend.pre_tokenizer
    trainer = WordLevelTrainer(vocab_size=config.max_size, min_frequency=config.min_count, special_tokens=specials,
                               show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    if tokenizer.get_vocab_size() <= len(specials):
        raise fail(f"student.tokenizer=words found no word occurring {config.min_count}+ times in the transfer set",
                   "lower student.words.min_count, or check the training data's text column")
    first, last = roles.get("cls_token", roles.get("bos_token")), roles.get("sep_token", roles.get("eos_token"))
    if first and last:  # the teacher's wrapping, so the student sees [CLS] ... [SEP] like the teacher
        ids = [(token, tokenizer.token_to_id(token)) for token in dict.fromkeys((first, last))]
        tokenizer.post_processor = TemplateProcessing(single=f"{first} $A {last}", pair=f"{first} $A {last} $B:1 {last}:1",
                                                      special_tokens=ids)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=teacher_tokenizer.model_max_length,
                                   **roles)
