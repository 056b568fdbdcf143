"""`melrl.method.leaks`: the leak check (ours, beyond the paper)."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melrl.method.leaks import find_leaks, leaks
from melrl.method.retention import retention_ratio


@pytest.mark.parametrize(
    "text, leaked",
    [
        ("so it equals 312.", True),
        ("the value 312 appears", True),
        ("x = -312", True),
        ("it was 312.0 exactly", True),
        ("(312)", True),
        ("it is 3123", False),
        ("it is 31.25", False),
        ("1312 apples", False),
        ("0.312 of them", False),
        ("version 312.5", False),
        ("no numbers here", False),
    ],
)
def test_numeric_gold_on_number_boundaries(text, leaked):
    assert (find_leaks(text, "312", "") == ["312"]) is leaked
    assert leaks(text, "312", "") is leaked


@pytest.mark.parametrize("gold", ["0312", "$312$", "\\boxed{312}", "312^\\circ", "x = 312", "312.", " 312 "])
def test_gold_spellings(gold):
    assert find_leaks("I got 312 at the end", gold, "") == [gold.strip()]
    assert find_leaks("I got 3123 at the end", gold, "") == []


# A gold of 1 or 2 digits leaks only where the text states it as the answer (issue 28: "x^2" and "Step 1" were
# leaks of the golds 2 and 1).
def test_small_gold_in_ordinary_notation_is_no_leak():
    text = "When squaring, compute x^2 carefully. Step 1: check units."
    assert find_leaks(text, "2", "What is 1 + 1?") == []
    assert find_leaks(text, "1", "What is 1 + 1?") == []


@pytest.mark.parametrize(
    "text",
    [
        "When squaring, compute x^2 carefully. Step 1: check units.",
        "If there are 2 cases, then check both.",
        "1. Split the sum. 2. Add the parts.",
        "I used 2 steps and 12 checks.",
        "the answer is 23",
        "the answer is 2.5",
        "x = 2 apples in each basket",
        "1 + 1 = 2 and 3 + 4 = 7 are both easy",  # "= 2" followed by more of the sentence
        "the boxed value \\boxed{21}",
        "a 2-step check and a 2x2 grid",
    ],
)
def test_small_gold_mentioned_but_not_stated_is_no_leak(text):
    assert find_leaks(text, "2", "") == []
    assert find_leaks(text, "02", "") == []  # zero-padded (AIME), the same number


@pytest.mark.parametrize(
    "text",
    [
        "the answer is 2",
        "So the final answer is $2$.",
        "Answer: 2",
        "answer = -2",
        "The result was **2**.",
        "1 + 1 = 2.",
        "1+1=2",
        "it equals 2, so",
        "x is equal to 2\nnext",
        "so $1+1 = 2$ here",
        "\\boxed{2}",
        "\\boxed{ x = 2 }",
        "the answer is \\(2\\)",
    ],
)
def test_small_gold_stated_as_the_answer_leaks(text):
    assert find_leaks(text, "2", "") == ["2"]
    assert find_leaks(text, "$2$", "") == ["$2$"]


def test_two_digit_gold_follows_the_small_rule_and_three_digits_do_not():
    assert find_leaks("Step 12: check", "12", "") == []
    assert find_leaks("so the answer is 12.", "12", "") == ["12"]
    assert find_leaks("Step 123: check", "123", "") == ["123"]
    # a small gold that is also a distinctive problem number leaks as that number wherever it occurs
    assert find_leaks("Step 12: check", "12", "Twelve is 12; what is 6 + 6?") == ["12"]


def test_thousands_separator_gold():
    assert leaks("the total is 1,000,000", "1000000", "")
    assert leaks("the total is 1000000", "$1{,}000{,}000$".replace("{,}", ","), "")


@pytest.mark.parametrize(
    "text, leaked",
    [
        ("the answer is \\frac{14}{3}", True),
        ("the answer is \\dfrac { 14 } { 3 }", True),
        ("the answer is $\\tfrac{14}{3}$.", True),
        ("the answer is 14/3.", True),
        ("the answer is 14 / 3", True),
        ("the answer is 14/35", False),
        ("the answer is 114/3", False),
        ("the answer is \\frac{14}{37}", False),
        ("the answer is \\frac{1}{43}", False),
        ("fractions need a common denominator", False),
    ],
)
def test_latex_gold(text, leaked):
    assert bool(find_leaks(text, "\\frac{14}{3}", "")) is leaked


def test_other_non_numeric_golds():
    assert leaks("so x equals 2\\sqrt{3}", "2\\sqrt{3}", "")
    assert leaks("so x equals 2√3", "2\\sqrt{3}", "")
    assert not leaks("so x equals 2\\sqrt{35}", "2\\sqrt{3}", "")
    assert leaks("the day is Monday", "\\text{Monday}", "")
    assert leaks("the point (1, 2) works", "(1,2)", "")
    assert not leaks("A triangle has three sides", "A", "")  # one-letter golds are not searched for
    assert not leaks("anything", "", "")


def test_negative_latex_gold_ignores_sign():
    assert leaks("it is \\frac{1}{2}", "-\\frac{1}{2}", "")
    assert leaks("it is -1/2", "-\\frac{1}{2}", "")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=40), st.text(max_size=300))
def test_find_leaks_total_on_arbitrary_text(text, gold, problem):
    found = find_leaks(text, gold, problem)
    assert isinstance(found, list) and all(isinstance(x, str) for x in found)
    assert leaks(text, gold, problem) is bool(found)


def test_find_leaks_long_input_is_fast():
    t0 = time.perf_counter()
    find_leaks("14/3 1.2.3,4,5 " * 50_000 + "\\frac{14}{3}" * 20_000, "\\frac{14}{3}", "12 345 6.75 " * 1000)
    find_leaks("1" * 200_000 + " " * 200_000, "11", "9" * 100_000)
    for text in ("= " * 100_000, "answer is is " * 50_000, "\\boxed{ " * 50_000, "=$ $ -  1" * 50_000):
        assert find_leaks(text, "2", "") == []  # a small gold: the "stated as the answer" patterns
    assert time.perf_counter() - t0 < 30.0  # linear: about a second; a quadratic scan of these inputs takes hours


def test_distinctive_problem_numbers():
    problem = "A farmer has 37 cows, 2 dogs, 10 cats and 1000 sheep; 2.5 percent are ill and 0.5 are old. In 2024 ..."
    text = "If there are 37 animals and 2 groups and 10 kinds, 1000 in all, 2.5 and 0.5 of them, in 2024 ..."
    assert find_leaks(text, "99", problem) == ["37", "2.5", "2024"]
    assert find_leaks("I count 2 dogs and 10 cats, modulo 1000.", "99", problem) == []
    assert find_leaks("with 37 cows", "99", problem, common_numbers=()) == ["37"]
    assert find_leaks("1000 sheep", "99", problem, common_numbers=()) == ["1000"]
    # the gold is reported once even when it is also a problem number
    assert find_leaks("37 and 2.50", "37", problem) == ["37", "2.5"]


def test_clean_heuristics_do_not_leak():
    problem = "Find the remainder when 3^{2024} is divided by 1000."
    clean = "If I need a remainder modulo a power of ten, then I use the Chinese remainder theorem on its factors."
    assert find_leaks(clean, "481", problem) == []


def test_retention_ratio():
    assert retention_ratio(0, 0) == 0.0
    assert retention_ratio(3, 4) == 0.75
    assert retention_ratio(5, 5) == 1.0
    for bad in [(-1, 3), (4, 3), (0, -1)]:
        with pytest.raises(ValueError):
            retention_ratio(*bad)
