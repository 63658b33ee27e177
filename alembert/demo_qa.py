"""A built-in extractive question-answering task that alembert generates itself, so `python -m distill data=qa`
runs offline.

Each row is a short paragraph (3 to 6 sentences, under 80 words) of facts about made-up people, cities,
companies, years, colours and landmarks, a question about one of those facts, and the answer as a span of the
paragraph, SQuAD-style: {"text": [...], "answer_start": [character offsets]}.

The paragraph draws its entities from a small cast, so the same person or city recurs across facts and every
question has distractors of the answer's type in other sentences ("who founded acme ?" next to "wei chen bought
acme in 1987 ."). Questions come in a few paraphrased wordings. With probability `noise` (train and dev only)
the gold span is a wrong one of the same type from elsewhere in the paragraph. Distractors and noise are what
make a teacher's start/end distributions carry information that the single hard span does not.

Text is lowercase with punctuation as separate words, as in the other demos, so `vocabulary()` covers it.
Train rows have one answer; dev and test rows add the span with or without a leading "the" where there is
one, as SQuAD dev lists several. Each split has its own random stream seeded from the config's seed and the
split's name, and the noise draws are made whatever the rate, so changing `noise` or a split's size leaves the
other splits, and every question and paragraph, unchanged.
"""

from __future__ import annotations

import random
import re
import string

from alembert.demo import DemoConfig

PEOPLE = ("maria garcia", "john smith", "wei chen", "ahmed khan", "anna kowalski", "david miller", "sofia rossi",
          "kenji tanaka", "laura jones", "pierre dubois", "olga ivanova", "carlos silva", "emma brown", "amara okafor")
CITIES = ("paris", "berlin", "new york", "tokyo", "cairo", "lima", "oslo", "madrid", "sydney", "toronto", "nairobi",
          "rome", "seoul", "lisbon", "cape town", "buenos aires")
COMPANIES = ("acme", "the nordic group", "zenith labs", "the orion company", "bluewave", "the delta trust",
             "northwind", "the atlas group", "kestrel motors", "the harbor bank", "lumen systems", "the crescent fund")
YEARS = tuple(str(year) for year in range(1950, 2020))
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple", "grey", "dark green", "light blue")
OBJECTS = ("bridge", "tower", "statue", "museum", "library", "stadium", "fountain", "station", "lighthouse",
           "town hall")
POOLS = {"person": PEOPLE, "city": CITIES, "company": COMPANIES, "year": YEARS, "colour": COLOURS, "object": OBJECTS}
FACTS = (  # (sentence, {slot: question wordings}); a slot is named by its type in POOLS, at most once per sentence
    ("{person} founded {company} in {year} .", {
        "person": ("who founded {company} ?", "who is the founder of {company} ?", "who started {company} in {year} ?"),
        "company": ("which company did {person} found ?", "what did {person} found in {year} ?"),
        "year": ("in which year was {company} founded ?", "when did {person} found {company} ?",
                 "what year was {company} founded in ?")}),
    ("{person} bought {company} in {year} .", {
        "person": ("who bought {company} ?", "who acquired {company} in {year} ?"),
        "company": ("which company did {person} buy ?", "what did {person} acquire in {year} ?"),
        "year": ("when did {person} buy {company} ?", "in which year was {company} bought ?")}),
    ("{company} is based in {city} .", {
        "company": ("which company is based in {city} ?", "what company has its home in {city} ?"),
        "city": ("where is {company} based ?", "in which city is {company} based ?",
                 "which city is home to {company} ?")}),
    ("{company} opened an office in {city} in {year} .", {
        "company": ("which company opened an office in {city} ?",),
        "city": ("where did {company} open an office ?", "in which city did {company} open an office in {year} ?"),
        "year": ("when did {company} open an office in {city} ?", "in which year did {company} open an office ?")}),
    ("the {object} in {city} is painted {colour} .", {
        "object": ("what is painted {colour} in {city} ?",),
        "city": ("in which city is the {object} painted {colour} ?",),
        "colour": ("what colour is the {object} in {city} ?", "which colour is the {object} in {city} painted ?",
                   "the {object} in {city} is painted what colour ?")}),
    ("the {object} in {city} was built in {year} .", {
        "object": ("what was built in {city} in {year} ?",),
        "city": ("where was the {object} built in {year} ?",),
        "year": ("when was the {object} in {city} built ?", "in which year was the {object} in {city} built ?")}),
    ("{person} was born in {city} in {year} .", {
        "person": ("who was born in {city} in {year} ?", "which person was born in {city} ?"),
        "city": ("where was {person} born ?", "in which city was {person} born ?"),
        "year": ("when was {person} born ?", "in which year was {person} born ?",
                 "what is the birth year of {person} ?")}),
    ("{person} moved to {city} in {year} .", {
        "person": ("who moved to {city} in {year} ?",),
        "city": ("where did {person} move to ?", "which city did {person} move to in {year} ?"),
        "year": ("when did {person} move to {city} ?", "in which year did {person} move to {city} ?")}),
    ("the favourite colour of {person} is {colour} .", {
        "person": ("whose favourite colour is {colour} ?",),
        "colour": ("what is the favourite colour of {person} ?", "which colour does {person} like best ?")}),
)
SPLITS = ("train", "dev", "test")


def _render(template: str, values: dict[str, str]) -> tuple[str, dict[str, int]]:
    text, starts = "", {}
    for literal, slot, _, _ in string.Formatter().parse(template):
        text += literal
        if slot is not None:
            starts[slot] = len(text)
            text += values[slot]
    return text, starts


def _paragraph(rng: random.Random) -> tuple[str, list[tuple[dict, dict[str, str], dict[str, int]]]]:
    cast = {kind: rng.sample(pool, rng.randint(2, 3)) for kind, pool in POOLS.items()}
    sentences, facts, offset = [], [], 0
    for template, questions in rng.sample(FACTS, rng.randint(3, 6)):
        values = {slot: rng.choice(cast[slot]) for _, slot, _, _ in string.Formatter().parse(template) if slot}
        sentence, starts = _render(template, values)
        sentences.append(sentence)
        facts.append((questions, values, {slot: offset + start for slot, start in starts.items()}))
        offset += len(sentence) + 1
    return " ".join(sentences), facts


def _candidates(facts: list) -> list[tuple]:
    """(fact, slot, distractors) for every askable slot with a same-type, different-text span elsewhere."""
    mentions = [(slot, values[slot], starts[slot]) for _, values, starts in facts for slot in values]
    found = []
    for questions, values, starts in facts:
        for slot in questions:
            distractors = [(text, start) for kind, text, start in mentions if kind == slot and text != values[slot]]
            if distractors:
                found.append(((questions, values, starts), slot, distractors))
    return found


def _answers(context: str, text: str, start: int, alternatives: bool) -> dict[str, list]:
    answers = {"text": [text], "answer_start": [start]}
    if alternatives and text.startswith("the "):
        answers["text"].append(text[4:])
        answers["answer_start"].append(start + 4)
    elif alternatives and context[max(start - 5, 0):start] in ("the ", " the "):
        answers["text"].append("the " + text)
        answers["answer_start"].append(start - 4)
    return answers


def _row(rng: random.Random, noise: float, alternatives: bool) -> tuple:
    candidates: list = []
    while not candidates:
        context, facts = _paragraph(rng)
        candidates = _candidates(facts)
    (questions, values, starts), slot, distractors = rng.choice(candidates)
    question = rng.choice(questions[slot]).format(**values)
    noisy = rng.random() < noise
    wrong = rng.choice(distractors)
    text, start = wrong if noisy else (values[slot], starts[slot])
    return question, context, _answers(context, text, start, alternatives)


def generate(config: DemoConfig = DemoConfig()) -> dict[str, list[tuple]]:
    """{"train", "dev", "test"} lists of (question, context, answers) rows, deterministic in the seed; test has
    no noise. answers = {"text": [str, ...], "answer_start": [int, ...]}, one answer in train, 1-2 otherwise."""
    sizes = {"train": config.train_size, "dev": config.dev_size, "test": config.test_size}
    rows = {}
    for split in SPLITS:
        rng = random.Random(f"{config.seed}/{split}")
        noise = 0.0 if split == "test" else config.noise
        rows[split] = [_row(rng, noise, split != "train") for _ in range(sizes[split])]
    return rows


def vocabulary() -> list[str]:
    """Every word the generator can emit, for building tiny test tokenizers."""
    phrases = [template for template, _ in FACTS]
    phrases += [wording for _, questions in FACTS for wordings in questions.values() for wording in wordings]
    phrases += [name for pool in POOLS.values() for name in pool]
    return sorted({word for phrase in phrases for word in re.sub(r"\{\w+\}", " ", phrase).split()})
