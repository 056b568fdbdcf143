"""Seeded generator of easy arithmetic word problems, difficulty levels 1..5.

Answers are computed on Python ints, never by evaluating a string. Train and test sets are disjoint by
construction: every problem's underlying arithmetic (its operation and operands, regardless of wording) is
hashed into one of the two splits, so no test item ever shares its arithmetic with a train item.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterable

LEVELS = (1, 2, 3, 4, 5)
SPLITS = ("train", "test")
TEST_FRACTION = 0.2

logger = logging.getLogger("melrl.data")

NAMES = ("Tom", "Ana", "Ben", "Mia", "Sam", "Lily", "Omar", "Zoe", "Ravi", "Nora")
ITEMS = ("apples", "pencils", "marbles", "stickers", "books", "cookies", "cards", "shells", "coins", "toys")

# (problem text, integer answer, key); the key identifies the arithmetic independently of the wording.
Item = tuple[str, int, tuple]
Generator = Callable[[random.Random], Item]


def _words(rng: random.Random) -> tuple[str, str]:
    return rng.choice(NAMES), rng.choice(ITEMS)


def _add(rng: random.Random, lo: int, hi: int) -> Item:
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    name, item = _words(rng)
    text = rng.choice(
        (
            f"What is {a} + {b}?",
            f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
            f"There are {a} {item} in a box. {name} puts in {b} more. How many {item} are in the box?",
        )
    )
    return text, a + b, ("+", min(a, b), max(a, b))


def _sub(rng: random.Random, lo: int, hi: int) -> Item:
    a, b = sorted((rng.randint(lo, hi), rng.randint(lo, hi)), reverse=True)
    name, item = _words(rng)
    text = rng.choice(
        (
            f"What is {a} - {b}?",
            f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have left?",
            f"There are {a} {item} on a table. {name} takes {b} of them. How many {item} are still on the table?",
        )
    )
    return text, a - b, ("-", a, b)


def _add_or_sub(rng: random.Random, lo: int, hi: int) -> Item:
    return _add(rng, lo, hi) if rng.random() < 0.5 else _sub(rng, lo, hi)


def _mul(rng: random.Random) -> Item:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    name, item = _words(rng)
    text = rng.choice(
        (
            f"What is {a} × {b}?",
            f"{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have?",
        )
    )
    return text, a * b, ("*", min(a, b), max(a, b))


def _two_step(rng: random.Random) -> Item:
    a, b = rng.randint(5, 20), rng.randint(1, 9)
    c = rng.randint(1, a + b)
    name, item = _words(rng)
    text = rng.choice(
        (
            f"What is {a} + {b} - {c}?",
            f"{name} has {a} {item}, gets {b} more, and then gives away {c}. How many {item} does {name} have now?",
        )
    )
    return text, a + b - c, ("+-", a, b, c)


def _level4(rng: random.Random) -> Item:
    return _mul(rng) if rng.random() < 0.5 else _two_step(rng)


def _packs(rng: random.Random) -> Item:
    """a * b + c - d"""
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 20)
    d = rng.randint(1, a * b + c)
    name, item = _words(rng)
    text = rng.choice(
        (
            f"What is {a} × {b} + {c} - {d}?",
            f"{name} buys {a} packs of {item} with {b} {item} in each pack, finds {c} more, and then gives {d} "
            f"to a friend. How many {item} does {name} have now?",
        )
    )
    return text, a * b + c - d, ("*+-", a, b, c, d)


def _groups(rng: random.Random) -> Item:
    """(a + b) * c - d"""
    a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(2, 6)
    d = rng.randint(1, (a + b) * c)
    item = rng.choice(ITEMS)
    text = (
        f"Each of {c} friends has {a} red {item} and {b} blue {item}. Together they give away {d} {item}. "
        f"How many {item} do they have left?"
    )
    return text, (a + b) * c - d, ("+*-", a, b, c, d)


def _shop(rng: random.Random) -> Item:
    """a * b - c * d"""
    a, b, d = rng.randint(3, 9), rng.randint(3, 9), rng.randint(2, 9)
    c = rng.randint(1, (a * b) // d)
    item = rng.choice(ITEMS)
    text = (
        f"A shop has {a} boxes with {b} {item} in each box. It sells {c} bags with {d} {item} in each bag. "
        f"How many {item} does the shop have left?"
    )
    return text, a * b - c * d, ("*-*", a, b, c, d)


def _level5(rng: random.Random) -> Item:
    return rng.choice((_packs, _groups, _shop))(rng)


GENERATORS: dict[int, Generator] = {
    1: lambda rng: _add(rng, 1, 9),
    2: lambda rng: _add_or_sub(rng, 1, 9),
    3: lambda rng: _add_or_sub(rng, 10, 99),
    4: _level4,
    5: _level5,
}


def split_of(key: tuple) -> str:
    """The split that owns this arithmetic (stable across runs and Python versions)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "big") % 1000 < TEST_FRACTION * 1000 else "train"


def _levels(level: int | Iterable[int]) -> list[int]:
    levels = [level] if isinstance(level, int) else list(level)
    if not levels or any(lv not in LEVELS for lv in levels):
        raise ValueError(f"arith level must be in {LEVELS} (or a list of them), got {level!r}")
    return levels


def generate(n: int = 256, level: int | Iterable[int] = 1, seed: int = 0, split: str = "train") -> list[dict]:
    """`n` problems as dicts with id, problem, answer, level; several levels are interleaved round-robin."""
    if split not in SPLITS:
        raise ValueError(f"arith split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"arith n must be >= 0, got {n}")
    levels = _levels(level)
    # String seeds are hashed with SHA-512 by `random`, so the stream is reproducible and split-specific.
    rng = random.Random(f"melrl-arith:{seed}:{split}")
    tag = "" if split == "train" else f"{split}-"
    seen: set[str] = set()
    exhausted: set[int] = set()
    out = []
    for i in range(n):
        lv = levels[i % len(levels)]
        text, answer, fresh = _draw(rng, lv, split, seen, tries=1 if lv in exhausted else 2000)
        if not fresh:
            exhausted.add(lv)
        seen.add(text)
        out.append({"id": f"arith-L{lv}-s{seed}-{tag}{i:05d}", "problem": text, "answer": str(answer), "level": lv})
    if exhausted:
        logger.warning("arith: ran out of distinct %s problems at level(s) %s; some repeat", split, sorted(exhausted))
    return out


def _draw(rng: random.Random, level: int, split: str, seen: set[str], tries: int) -> tuple[str, int, bool]:
    """Up to `tries` candidates: the first one new to `seen`, else the last one with fresh=False."""
    for _ in range(tries):
        text, answer = _draw_in_split(rng, level, split)
        if text not in seen:
            return text, answer, True
    return text, answer, False


def _draw_in_split(rng: random.Random, level: int, split: str) -> tuple[str, int]:
    while True:  # terminates: every level has arithmetic in both splits
        text, answer, key = GENERATORS[level](rng)
        if split_of(key) == split:
            return text, answer
