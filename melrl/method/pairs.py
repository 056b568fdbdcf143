"""Contrastive pairs: which (correct, incorrect) rollouts of each group the policy analyses (`select_pairs`).

A pure function over verdicts (no torch, trl or transformers): deterministic per (seed, step, group), the same on
every process.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Pair", "select_pairs"]


@dataclass(frozen=True)
class Pair:
    """One contrastive pair: `group` is the prompt's group index in the batch, `correct` and `incorrect` are
    global row indices into the batch of B = n_groups * group_size rollouts."""

    group: int
    correct: int
    incorrect: int


def _group_rng(seed: int, step: int, group: int) -> random.Random:
    # A hash of the text "seed:step:group" rather than Python's hash(): identical across processes,
    # interpreters and PYTHONHASHSEED, and unrelated streams for neighbouring groups or steps.
    digest = hashlib.sha256(f"melrl.select_pairs:{seed}:{step}:{group}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def select_pairs(
    correct: Sequence[bool], group_size: int, max_pairs_per_prompt: int | None, seed: int, step: int = 0
) -> list[Pair]:
    """Choose the contrastive pairs (y+, y-) of a batch of verified rollouts.

    `correct[r]` is the verifier's verdict on row r. Rows come in groups of `group_size` consecutive rows, one
    group per prompt (group g holds rows g*group_size ... (g+1)*group_size - 1). Only groups with at least one
    correct and one incorrect row give pairs.

    Rule, per group: shuffle the group's correct rows C (a of them) and incorrect rows I (b of them) with a
    `random.Random` seeded from (seed, step, group index); then take pairs k = 0, 1, 2, ... as

        (C[k mod a], I[(k + floor(k / L)) mod b]),   L = lcm(a, b),

    until `max_pairs_per_prompt` pairs are taken or all a*b pairs are used (`None`: all, the paper's set). The first min(a, b) pairs use
    distinct rollouts on both sides; at every prefix each correct rollout is used floor(k/a) or ceil(k/a) times
    and each incorrect one floor(k/b) or ceil(k/b) times, so pairs spread over as many distinct rollouts as
    possible before any is reused; and the a*b pairs are enumerated exactly once (block j, k in [jL, (j+1)L),
    covers the pairs whose index difference is j modulo gcd(a, b)), so all chosen pairs are distinct.

    The choice depends only on (seed, step, group index, the group's verdicts): it is deterministic, the same
    on every process that sees the same (gathered) verdicts, and independent of the other groups. Pairs are
    returned group by group, in the order above.

    Raises ValueError when group_size < 2, len(correct) is not a multiple of group_size,
    max_pairs_per_prompt < 1, or a verdict is not a bool (0/1).
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 to have contrastive pairs, got {group_size}")
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    if len(correct) % group_size:
        raise ValueError(
            f"len(correct)={len(correct)} is not a multiple of group_size={group_size}; "
            "pass the verdicts of whole groups"
        )
    verdicts = []
    for r, v in enumerate(correct):
        if v not in (0, 1):  # True/False, 0/1 and numpy bools; a float reward like 0.5 is a caller bug
            raise ValueError(f"correct[{r}]={v!r} is not a bool verdict (pass verifier verdicts, not rewards)")
        verdicts.append(bool(v))

    pairs: list[Pair] = []
    for g in range(len(verdicts) // group_size):
        rows = range(g * group_size, (g + 1) * group_size)
        pos = [r for r in rows if verdicts[r]]
        neg = [r for r in rows if not verdicts[r]]
        if not pos or not neg:
            continue
        rng = _group_rng(seed, step, g)
        rng.shuffle(pos)
        rng.shuffle(neg)
        a, b = len(pos), len(neg)
        lcm = a * b // _gcd(a, b)
        for k in range(a * b if max_pairs_per_prompt is None else min(max_pairs_per_prompt, a * b)):
            pairs.append(Pair(group=g, correct=pos[k % a], incorrect=neg[(k + k // lcm) % b]))
    return pairs


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a
