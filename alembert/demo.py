"""A built-in sentiment task that alembert generates itself, so the default run needs no download.

Sentences are composed from clauses about a film. Each clause carries a graded polarity
(strong or mild adjectives, intensifiers, hedges, negation), and contrast words ("but",
"although") make the later clause count double. The label is the sign of the total score,
with a little label noise. Graded scores make some examples near the boundary, which is
exactly where a teacher's soft targets carry information that hard labels do not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LABELS = ("negative", "positive")

SUBJECTS = (
    "the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending",
    "the cast", "the script", "the dialogue", "the pacing", "the story", "the director",
    "the camera work", "the lead actor", "the villain", "the humor", "the sequel", "the finale",
    "the special effects", "the screenplay", "the music", "the performances", "the editing",
)
STRONG_POSITIVE = ("brilliant", "wonderful", "superb", "outstanding", "masterful", "stunning", "delightful")
MILD_POSITIVE = ("good", "nice", "fun", "charming", "enjoyable", "clever", "decent", "pleasant", "solid")
STRONG_NEGATIVE = ("terrible", "awful", "dreadful", "horrible", "unbearable", "atrocious", "painful")
MILD_NEGATIVE = ("bad", "dull", "boring", "weak", "messy", "clumsy", "bland", "tedious", "forgettable")
INTENSIFIERS = ("very", "really", "truly", "incredibly", "extremely")
HEDGES = ("somewhat", "a bit", "slightly", "fairly", "rather")
NEGATIONS = ("not", "never", "hardly")
VERBS = ("is", "was", "felt", "seemed")
CONTRASTS = ("but", "yet", "however")
FILLERS = (
    "", "", "", "i watched it on sunday and", "to be honest", "in my opinion", "after the first hour",
    "my friends agreed that", "as expected", "surprisingly", "for a family night",
)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the generated splits, the label-noise rate and the seed."""

    train_size: int = 4000
    dev_size: int = 500
    test_size: int = 500
    noise: float = 0.05
    seed: int = 13


def _clause(rng: random.Random) -> tuple[str, float]:
    positive = rng.random() < 0.5
    strong = rng.random() < 0.4
    pool = (STRONG_POSITIVE if strong else MILD_POSITIVE) if positive else (STRONG_NEGATIVE if strong else MILD_NEGATIVE)
    score = (2.0 if strong else 1.0) * (1 if positive else -1)
    words = [rng.choice(SUBJECTS), rng.choice(VERBS)]
    modifier = rng.random()
    if modifier < 0.2:
        words.append(rng.choice(NEGATIONS))
        score *= -0.7  # negation flips polarity but weakens it: "not terrible" is not "great"
    elif modifier < 0.45:
        words.append(rng.choice(INTENSIFIERS))
        score *= 1.5
    elif modifier < 0.6:
        words.append(rng.choice(HEDGES))
        score *= 0.5
    words.append(rng.choice(pool))
    return " ".join(words), score


def _sentence(rng: random.Random) -> tuple[str, float]:
    shape = rng.random()
    first, first_score = _clause(rng)
    if shape < 0.4:
        text, score = first, first_score
    elif shape < 0.7:
        second, second_score = _clause(rng)
        text, score = f"{first} {rng.choice(CONTRASTS)} {second}", first_score + 2.0 * second_score
    elif shape < 0.85:
        second, second_score = _clause(rng)
        text, score = f"although {first} , {second}", first_score + 2.0 * second_score
    else:
        second, second_score = _clause(rng)
        text, score = f"{first} and {second}", first_score + second_score
    filler = rng.choice(FILLERS)
    return (f"{filler} {text}".strip() if filler else text), score


def _split(rng: random.Random, size: int, noise: float) -> list[dict]:
    rows: list[dict] = []
    while len(rows) < size:
        text, score = _sentence(rng)
        if abs(score) < 1e-6:
            continue  # a tie has no right answer
        label = int(score > 0)
        if rng.random() < noise:
            label = 1 - label
        rows.append({"sentence": text, "label": LABELS[label]})
    return rows


def generate(config: DemoConfig = DemoConfig()) -> dict[str, list[dict]]:
    """Return {"train", "dev", "test"} lists of {"sentence", "label"} rows, deterministic in the seed."""
    rng = random.Random(config.seed)
    return {
        "train": _split(rng, config.train_size, config.noise),
        "dev": _split(rng, config.dev_size, config.noise),
        "test": _split(rng, config.test_size, 0.0),
    }


def vocabulary() -> list[str]:
    """Every word the generator can emit, for building tiny test tokenizers."""
    groups = (SUBJECTS, STRONG_POSITIVE, MILD_POSITIVE, STRONG_NEGATIVE, MILD_NEGATIVE, INTENSIFIERS,
              HEDGES, NEGATIONS, VERBS, CONTRASTS, FILLERS, ("although", "and", ","))
    return sorted({word for group in groups for phrase in group for word in phrase.split()})
