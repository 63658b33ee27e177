"""A built-in NER task that alembert generates itself, so `python -m distill data=ner` runs offline.

Sentences come from templates with slots for people, places, organisations and miscellaneous names
(nationalities, events), drawn from lists, around context words. Some names are ambiguous
("Jordan", "Washington", "Chelsea" can be a person, a place or a club) and only the context
says which; a little label noise swaps entity types. Both make a teacher's per-token soft targets
carry information that the hard tags do not. Tags are IOB2, as in CoNLL-2003.
"""

from __future__ import annotations

import random

from alembert.demo import DemoConfig

PEOPLE = ("Angela Merkel", "John Smith", "Maria Garcia", "Wei Chen", "Ahmed Khan", "Anna Kowalski", "David Miller",
          "Sofia Rossi", "Kenji Tanaka", "Laura Jones", "Pierre Dubois", "Olga Ivanova", "Carlos Silva", "Emma Brown")
PLACES = ("Paris", "Berlin", "New York", "Tokyo", "Cairo", "Lima", "Oslo", "Madrid", "Sydney", "Toronto", "Nairobi",
          "Rome", "Seoul", "Lisbon", "South Africa", "Brazil")
ORGS = ("Reuters", "the United Nations", "Siemens", "Microsoft", "the World Bank", "Toyota", "Greenpeace", "NATO",
        "Bank of England", "Real Madrid", "Interpol", "Shell", "the Red Cross", "Nestle")
MISC = ("German", "French", "Japanese", "Olympic Games", "World Cup", "Nobel Prize", "Brazilian", "Italian", "Euro 2024")
AMBIGUOUS = ("Jordan", "Washington", "Chelsea", "Georgia", "Victoria", "Florence", "Sydney")
TEMPLATES = (  # (text, slot types); "{}" marks a slot
    ("{} said on monday that {} would open an office in {} .", ("PER", "ORG", "LOC")),
    ("{} met {} in {} to discuss the deal .", ("PER", "PER", "LOC")),
    ("shares of {} rose after {} praised its results .", ("ORG", "PER")),
    ("the {} team arrived in {} for the {} .", ("MISC", "LOC", "MISC")),
    ("{} beat {} 2-1 in {} on sunday .", ("ORG", "ORG", "LOC")),
    ("police in {} arrested two men , {} told {} .", ("LOC", "ORG", "PER")),
    ("{} , a {} engineer , joined {} last year .", ("PER", "MISC", "ORG")),
    ("flights from {} to {} were cancelled .", ("LOC", "LOC")),
    ("{} won the {} for her work .", ("PER", "MISC")),
    ("the weather in {} was cold and wet .", ("LOC",)),
    ("talks between {} and {} ended without agreement .", ("ORG", "ORG")),
    ("she moved to {} to work for {} .", ("LOC", "ORG")),
)
POOLS = {"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS, "MISC": MISC}
TYPES = tuple(POOLS)


def _fill(rng: random.Random, kind: str) -> str:
    if kind != "MISC" and rng.random() < 0.15:
        return rng.choice(AMBIGUOUS)  # the same word as a person, a place or a club: the context decides
    return rng.choice(POOLS[kind])


def _sentence(rng: random.Random, noise: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    text, kinds = rng.choice(TEMPLATES)
    words, tags = [], []
    pieces = text.split("{}")
    for index, piece in enumerate(pieces):
        for word in piece.split():
            words.append(word)
            tags.append("O")
        if index == len(kinds):
            break
        kind = kinds[index]
        label = rng.choice([t for t in TYPES if t != kind]) if rng.random() < noise else kind
        name = _fill(rng, kind)
        if name.startswith("the "):  # CoNLL tags the article outside the entity
            words.append("the")
            tags.append("O")
            name = name[4:]
        for position, word in enumerate(name.split()):
            words.append(word)
            tags.append(("B-" if position == 0 else "I-") + label)
    return tuple(words), tuple(tags)


def generate(config: DemoConfig = DemoConfig()) -> dict[str, list[tuple]]:
    """{"train", "dev", "test"} lists of (words, None, tags) rows, deterministic in the seed; test has no noise."""
    rng = random.Random(config.seed)
    sizes = {"train": (config.train_size, config.noise), "dev": (config.dev_size, config.noise),
             "test": (config.test_size, 0.0)}
    return {split: [_row(rng, noise) for _ in range(size)] for split, (size, noise) in sizes.items()}


def _row(rng: random.Random, noise: float) -> tuple:
    words, tags = _sentence(rng, noise)
    return words, None, tags


def vocabulary() -> list[str]:
    """Every word the generator can emit, for building tiny test tokenizers."""
    phrases = [t for t, _ in TEMPLATES] + [name for pool in POOLS.values() for name in pool] + list(AMBIGUOUS)
    return sorted({word for phrase in phrases for word in phrase.replace("{}", " ").split()})
