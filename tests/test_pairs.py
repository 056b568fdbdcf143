"""`melrl.method.pairs`: which contrastive pairs are analysed."""

import itertools
import subprocess
import sys
from collections import Counter

import pytest

from melrl.method.pairs import Pair, select_pairs
from tests.helpers import subprocess_env


def _check_group_pairs(pairs, correct, group_size):
    for p in pairs:
        lo = p.group * group_size
        assert lo <= p.correct < lo + group_size and lo <= p.incorrect < lo + group_size
        assert correct[p.correct] and not correct[p.incorrect]


def test_no_mixed_group_no_pairs():
    assert select_pairs([True] * 4 + [False] * 4, group_size=4, max_pairs_per_prompt=8, seed=0) == []
    assert select_pairs([], group_size=4, max_pairs_per_prompt=8, seed=0) == []


def test_only_mixed_groups_give_pairs():
    correct = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    pairs = select_pairs(correct, group_size=4, max_pairs_per_prompt=16, seed=3)
    assert {p.group for p in pairs} == {1}
    _check_group_pairs(pairs, correct, 4)
    assert {(p.correct, p.incorrect) for p in pairs} == {(4, 5), (4, 6), (4, 7)}


def test_cap_and_distinct():
    correct = [1, 0, 1, 0, 1, 0, 0, 0]  # 3 correct x 5 incorrect = 15 possible pairs
    for cap in range(1, 20):
        pairs = select_pairs(correct, group_size=8, max_pairs_per_prompt=cap, seed=1)
        assert len(pairs) == min(cap, 15)
        assert len(set(pairs)) == len(pairs)
        _check_group_pairs(pairs, correct, 8)
    everything = select_pairs(correct, group_size=8, max_pairs_per_prompt=100, seed=1)
    assert {(p.correct, p.incorrect) for p in everything} == set(itertools.product([0, 2, 4], [1, 3, 5, 6, 7]))


def test_no_cap_gives_the_papers_set_of_every_pair():
    # §3.2: P_x = {(y+, y-) | y+ in Y+, y- in Y-}
    correct = [1, 0, 1, 0, 1, 0, 0, 0] + [0, 1, 1, 1, 1, 0, 0, 0]
    pairs = select_pairs(correct, group_size=8, max_pairs_per_prompt=None, seed=1)
    assert len(pairs) == len(set(pairs)) == 3 * 5 + 4 * 4
    assert {(p.correct, p.incorrect) for p in pairs if p.group == 1} == set(
        itertools.product([9, 10, 11, 12], [8, 13, 14, 15]))


@pytest.mark.parametrize("n_correct", range(1, 8))
@pytest.mark.parametrize("seed", range(3))
def test_spreads_over_distinct_rollouts_first(n_correct, seed):
    group_size = 8
    correct = [True] * n_correct + [False] * (group_size - n_correct)
    a, b = n_correct, group_size - n_correct
    for cap in range(1, a * b + 1):
        pairs = select_pairs(correct, group_size, cap, seed=seed)
        assert len(set(pairs)) == len(pairs) == cap
        uses_c = Counter(p.correct for p in pairs)
        uses_i = Counter(p.incorrect for p in pairs)
        # Every prefix is balanced: no rollout is used twice while another on its side is unused, etc.
        assert max(uses_c.values()) - min(uses_c.get(r, 0) for r in range(a)) <= 1
        assert max(uses_i.values()) - min(uses_i.get(r, 0) for r in range(a, group_size)) <= 1
        if cap <= min(a, b):
            assert len(uses_c) == len(uses_i) == cap  # all distinct rollouts


def test_deterministic_and_varies_with_seed_and_step():
    correct = [1, 0, 1, 0, 1, 0, 1, 0] * 3
    run = lambda seed, step: select_pairs(correct, 8, 4, seed=seed, step=step)  # noqa: E731
    assert run(7, 2) == run(7, 2)
    assert Pair(group=0, correct=0, incorrect=1) in select_pairs(correct, 8, 16, seed=7)
    assert len({tuple(run(s, 0)) for s in range(10)}) > 1
    assert len({tuple(run(7, t)) for t in range(10)}) > 1


def test_deterministic_across_processes():
    correct = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1, 0, 1]
    code = (
        "from melrl.method.pairs import select_pairs\n"
        f"print([tuple(vars(p).values()) for p in select_pairs({correct}, 8, 5, seed=11, step=4)])\n"
    )
    outs = set()
    for hashseed in ("0", "1", "random"):
        env = subprocess_env() | {"PYTHONHASHSEED": hashseed}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        outs.add(proc.stdout)
    assert len(outs) == 1
    here = [tuple(vars(p).values()) for p in select_pairs(correct, 8, 5, seed=11, step=4)]
    assert outs.pop().strip() == str(here)


def test_groups_are_independent():
    g0 = [1, 0, 1, 0, 0, 1]
    others = [[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 0, 1]]
    base = [p for p in select_pairs(g0 + others[0], 6, 3, seed=5) if p.group == 0]
    for other in others[1:]:
        assert [p for p in select_pairs(g0 + other, 6, 3, seed=5) if p.group == 0] == base
    # Group 1's choice does not depend on group 0 either.
    g1 = [0, 1, 1, 0, 1, 0]
    first = [p for p in select_pairs([1] * 6 + g1, 6, 3, seed=5) if p.group == 1]
    second = [p for p in select_pairs(g0 + g1, 6, 3, seed=5) if p.group == 1]
    assert first == second and len(first) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(correct=[True, False], group_size=1, max_pairs_per_prompt=1),
        dict(correct=[True, False, True], group_size=2, max_pairs_per_prompt=1),
        dict(correct=[True, False], group_size=2, max_pairs_per_prompt=0),
        dict(correct=[1.0, 0.5], group_size=2, max_pairs_per_prompt=1),
    ],
)
def test_pair_errors(kwargs):
    with pytest.raises(ValueError):
        select_pairs(seed=0, **kwargs)


def test_accepts_int_verdicts():
    assert select_pairs([1, 0], 2, 1, seed=0) == select_pairs([True, False], 2, 1, seed=0) == [Pair(0, 0, 1)]
