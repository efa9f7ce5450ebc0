"""Sentences the project writes itself, so the embedded corpus needs no copied text.

A small seeded grammar: statements, questions and exclamations, with commas, a colon or a quotation now
and then, and numbers written as digits ("3 boats", "in 1984") so that a text cleaner's number handling
is exercised. Clauses hold about 3 to 12 words, which eSpeak speaks in roughly 1 to 5 seconds.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

NAMES = (
    "Anna", "Ben", "Clara", "David", "Elena", "Frank", "Grace", "Henry", "Iris", "Jack", "Karen", "Leo",
    "Maria", "Nina", "Oscar", "Paul", "Quinn", "Rosa", "Sam", "Tom", "Uma", "Victor", "Wendy", "Yusuf",
    "Zoe", "Arthur", "Beatrice", "Charles", "Diana", "Edward", "Fiona", "George", "Helen", "Isaac",
    "Julia", "Martin", "Olivia", "Peter", "Ruth", "Simon",
)  # fmt: skip
PLACES = (
    "London", "Paris", "Boston", "Chicago", "Denver", "Dublin", "Lisbon", "Madrid", "Oslo", "Prague",
    "Rome", "Seattle", "Sydney", "Tokyo", "Vienna", "Berlin", "Cairo", "Delhi", "Austin", "Geneva",
    "the village", "the harbour", "the market", "the station", "the library", "the garden", "the valley",
    "the mountains", "the old mill", "the river bank", "the city square", "the north coast",
    "the farm", "the school", "the bakery", "the museum", "the bridge", "the forest", "the island",
    "the hospital",
)  # fmt: skip
# Nouns with irregular or non-"s" plurals are listed as (singular, plural).
NOUNS = (
    "apple", "basket", "boat", "book", "bottle", "bridge", "candle", "car", "chair", "clock", "coat",
    "cup", "desk", "door", "dog", "drum", "engine", "feather", "flag", "flower", "garden", "gate",
    "guitar", "hammer", "hat", "horse", "house", "jacket", "kettle", "key", "ladder", "lamp", "lantern",
    "letter", "map", "mirror", "needle", "orange", "painting", "pencil", "piano", "picture", "pillow",
    "plate", "pocket", "rabbit", "ribbon", "ring", "road", "rope", "sail", "shirt", "shoe", "signal",
    "song", "stone", "table", "ticket", "tower", "train", "tree", "trumpet", "umbrella", "violin",
    "wagon", "wall", "window", "wheel", "blanket", "bicycle", "camera", "carpet", "cloud", "garage",
    ("box", "boxes"), ("brush", "brushes"), ("glass", "glasses"), ("church", "churches"),
    ("knife", "knives"), ("leaf", "leaves"), ("child", "children"), ("mouse", "mice"),
    ("sheep", "sheep"), ("story", "stories"), ("city", "cities"), ("family", "families"),
)  # fmt: skip
# Transitive verbs as (base, past).
VERBS = (
    ("carry", "carried"), ("paint", "painted"), ("find", "found"), ("lose", "lost"), ("build", "built"),
    ("clean", "cleaned"), ("open", "opened"), ("close", "closed"), ("move", "moved"), ("sell", "sold"),
    ("buy", "bought"), ("fix", "fixed"), ("break", "broke"), ("draw", "drew"), ("hide", "hid"),
    ("watch", "watched"), ("follow", "followed"), ("remember", "remembered"), ("borrow", "borrowed"),
    ("lend", "lent"), ("push", "pushed"), ("pull", "pulled"), ("wash", "washed"), ("fold", "folded"),
    ("measure", "measured"), ("count", "counted"), ("describe", "described"), ("deliver", "delivered"),
    ("collect", "collected"), ("repair", "repaired"), ("visit", "visited"), ("choose", "chose"),
    ("catch", "caught"), ("throw", "threw"), ("bring", "brought"), ("keep", "kept"), ("leave", "left"),
    ("send", "sent"), ("show", "showed"), ("take", "took"), ("hold", "held"), ("wrap", "wrapped"),
    ("polish", "polished"), ("study", "studied"), ("admire", "admired"), ("lift", "lifted"),
    ("check", "checked"), ("notice", "noticed"), ("guard", "guarded"), ("return", "returned"),
)  # fmt: skip
# Intransitive motion verbs as (base, past), used with a place.
MOTIONS = (
    ("walk", "walked"), ("run", "ran"), ("drive", "drove"), ("travel", "travelled"), ("sail", "sailed"),
    ("fly", "flew"), ("ride", "rode"), ("hurry", "hurried"), ("wander", "wandered"), ("return", "returned"),
    ("move", "moved"), ("cycle", "cycled"),
)  # fmt: skip
ADJECTIVES = (
    "old", "new", "small", "large", "bright", "dark", "heavy", "light", "quiet", "loud", "warm", "cold",
    "green", "blue", "red", "yellow", "wooden", "golden", "silver", "broken", "clean", "dusty", "strange",
    "famous", "simple", "gentle", "tiny", "huge", "narrow", "wide", "shiny", "rusty", "soft", "hard",
    "empty", "crowded", "careful", "curious", "lucky", "tired", "happy", "sleepy", "proud", "brave",
    "clever", "patient", "ancient", "modern", "hidden", "lonely", "purple", "striped", "fragile",
    "elegant", "plain", "muddy", "frozen", "sunny", "windy", "cheerful",
)  # fmt: skip
ADVERBS = (
    "slowly", "quickly", "quietly", "carefully", "suddenly", "gently", "happily", "eagerly", "calmly",
    "boldly", "rarely", "often", "always", "nearly", "finally", "softly", "proudly", "patiently",
    "loudly", "early", "later", "already", "certainly", "barely", "secretly", "politely", "bravely",
    "gladly", "wisely", "seldom",
)  # fmt: skip
TIMES = ("yesterday", "today", "this morning", "last night", "on Monday", "on Friday", "in spring",
         "in winter", "after lunch", "before dawn", "at noon", "every week")  # fmt: skip


def _noun(word: str | tuple[str, str], plural: bool) -> str:
    if isinstance(word, tuple):
        return word[1] if plural else word[0]
    return word + "s" if plural else word


class _Grammar:
    """One seeded random stream; each method draws one phrase."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def pick(self, words: tuple) -> str | tuple:
        return self.rng.choice(words)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def noun_phrase(self) -> str:
        noun = _noun(self.pick(NOUNS), plural=False)
        adj = f"{self.pick(ADJECTIVES)} " if self.chance(0.6) else ""
        return f"the {adj}{noun}"

    def counted(self) -> str:
        n = self.rng.choice((self.rng.randint(2, 12), self.rng.randint(13, 99), self.rng.randint(100, 999)))
        adj = f"{self.pick(ADJECTIVES)} " if self.chance(0.3) else ""
        return f"{n} {adj}{_noun(self.pick(NOUNS), plural=True)}"

    def obj(self) -> str:
        return self.counted() if self.chance(0.2) else self.noun_phrase()

    def subject(self) -> str:
        return self.pick(NAMES) if self.chance(0.6) else self.noun_phrase().capitalize()

    def tail(self) -> str:
        """An optional place, year or time after the clause."""
        r = self.rng.random()
        if r < 0.25:
            return f" in {self.pick(PLACES)}"
        if r < 0.37:
            return f" in {self.rng.randint(1800, 2030)}"
        if r < 0.45:
            return f" at {self.rng.randint(1, 12)} o'clock"
        if r < 0.65:
            return f" {self.pick(TIMES)}"
        return ""

    def clause(self) -> str:
        adv = f"{self.pick(ADVERBS)} " if self.chance(0.25) else ""
        if self.chance(0.2):
            base, past = self.pick(MOTIONS)
            return f"{self.subject()} {adv}{past} to {self.pick(PLACES)}"
        base, past = self.pick(VERBS)
        return f"{self.subject()} {adv}{past} {self.obj()}{self.tail()}"

    def statement(self) -> str:
        r = self.rng.random()
        if r < 0.55:
            return f"{self.clause()}."
        if r < 0.7:
            joiner = self.pick(("and", "but", "so", "while"))
            return f"{self.clause()}, {joiner} {_lower_first(self.clause())}."
        if r < 0.8:
            return f"{self.pick(('When', 'After', 'Before', 'Because'))} {_lower_first(self.clause())}, {_lower_first(self.clause())}."
        if r < 0.9:
            return f'{self.pick(NAMES)} said, "{self.clause()}."'
        items = [_noun(self.pick(NOUNS), plural=True) for _ in range(3)]
        return f"{self.pick(NAMES)} needed {len(items)} things: {items[0]}, {items[1]}, and {items[2]}."

    def question(self) -> str:
        base, _ = self.pick(VERBS)
        r = self.rng.random()
        if r < 0.3:
            return f"Did {_lower_first(self.subject())} {base} {self.obj()}{self.tail()}?"
        if r < 0.5:
            return f"{self.pick(('Where', 'Why', 'When', 'How'))} did {self.pick(NAMES)} {base} {self.obj()}?"
        if r < 0.65:
            return f"Is {self.noun_phrase()} really {self.pick(ADJECTIVES)}?"
        if r < 0.8:
            return f"Who will {base} {self.obj()}{self.tail()}?"
        return f"{self.pick(NAMES)}, can you {base} {self.obj()}?"

    def exclamation(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            noun = _noun(self.pick(NOUNS), plural=False)
            article = "an" if (adj := self.pick(ADJECTIVES))[0] in "aeiou" else "a"
            return f"What {article} {adj} {noun}!"
        if r < 0.65:
            base, _ = self.pick(VERBS)
            return f"{self.pick(NAMES)}, {base} {self.obj()} {self.pick(('now', 'at once', 'please'))}!"
        return f"{self.clause()}!"

    def sentence(self) -> str:
        r = self.rng.random()
        if r < 0.62:
            return self.statement()
        if r < 0.87:
            return self.question()
        return self.exclamation()


def _lower_first(text: str) -> str:
    """Lower-case a leading article ("The old cup" -> "the old cup") but keep names capitalised."""
    return "t" + text[1:] if text.startswith("The ") else text


def iter_sentences(seed: int) -> Iterator[str]:
    """An endless stream of distinct sentences, deterministic in `seed`.

    The corpus draws from one stream for train then eval, and takes the next sentence when one is
    spoken too short or too long, so no sentence appears twice and the result depends only on the seed.
    """
    grammar = _Grammar(seed)
    seen: set[str] = set()
    while True:
        text = grammar.sentence()
        if text not in seen:
            seen.add(text)
            yield text


def generate_sentences(n: int, seed: int) -> list[str]:
    """The first `n` sentences of `iter_sentences(seed)`."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(itertools.islice(iter_sentences(seed), n))
