"""Answer extraction, equivalence checking, isolation and timeouts of the verifier, and the accuracy reward."""

from __future__ import annotations

import time

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melrl.verify import verifier
from melrl.verify.answers import (
    MAX_ANSWER_CHARS, extract_answer, is_placeholder, percent_number, prescreen, same_time, time_of_day,
)
from melrl.training.rewards import make_accuracy_reward
from melrl.verify.verifier import VerifierPool, default_timeout, verify, verify_batch

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2, timeout=TIMEOUT) as p:
        p.warmup()
        yield p


@pytest.fixture
def faulty_pool():
    """Workers that can be told to exit, crash or hang (tests/verifier_faults.py); they verify as the shipped ones."""
    target = (str(Path(__file__).with_name("verifier_faults.py")), "worker_main")
    with VerifierPool(workers=2, timeout=TIMEOUT, worker_target=target) as p:
        p.warmup()
        yield p


# --- extraction -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fmt, expected",
    [
        ("so \\boxed{3} ... wait, \\boxed{5}.", "auto", "5"),
        ("$\\boxed{\\frac{1}{2}}$", "boxed", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "boxed", "\\{1, 2\\}"),
        ("\\fbox{7}", "boxed", "7"),
        ("\\boxed{\\boxed{5}}", "boxed", "5"),
        ("$\\boxed 5$", "boxed", "5"),
        ("\\boxed{3} and then \\boxed{5", "boxed", None),  # the last box is truncated: no answer
        ("\\boxed{}", "boxed", None),
        ("no box here", "boxed", None),
        ("Answer: 25", "boxed", None),
        ("work\nAnswer: 25\nmore work\nAnswer: $\\frac{1}{2}$.", "answer_line", "\\frac{1}{2}"),
        ("**Answer:** 42", "answer_line", "42"),
        ("Final answer: \\(x+1\\)", "answer_line", "x+1"),
        ("Answer: \\boxed{4}", "answer_line", "4"),
        ("\\boxed{7}", "answer_line", None),
        ("Answer: 3\nso \\boxed{4}", "auto", "4"),
        ("Answer: 3", "auto", "3"),
        ("nothing at all", "auto", None),
        ("", "auto", None),
        # GSM8K styles, read by "auto"
        ("16 - 3 - 4 = <<16-3-4=9>>9 eggs\n9 * 2 = <<9*2=18>>18\n#### 18", "auto", "18"),
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\nA: 18", "auto", "18"),
        ("She makes $18 every day.\nA: $18", "auto", "18"),
        ("9 * 2 = 18 dollars. The answer is 18.", "auto", "18"),
        ("9 * 2 = 18 dollars. The answer is $18.", "auto", "18"),
        ("So the answer is \\$1,080 dollars.", "auto", "1,080"),
        ("The answer is $\\frac{3}{4}$.", "auto", "\\frac{3}{4}"),
        ("The answer is 2.5, since 5/2 = 2.5.", "auto", "2.5"),
        ("the final answer is: 42", "auto", "42"),
        ("**A:** 7 apples", "auto", "7"),
        ("The answer is 2x.", "auto", "2x"),  # a variable is not a unit
        ("A: 2 x + 3", "auto", "2 x + 3"),
        ("A: 1.8 million", "auto", "1.8 million"),  # a scale word is not a unit either
        ("#### 1,200", "auto", "1,200"),
        ("#### -3", "auto", "-3"),
        ("Q: how many? A: 5\nno marker on its own line", "auto", None),  # "A:" counts at the start of a line
        # the last statement wins among them; a closing \boxed wins over all of them
        ("The answer is 12.\nWait, I made an error: 3 * 5 = 15.\n#### 15", "auto", "15"),
        ("#### 12\nAnswer: 13", "auto", "13"),
        ("The answer is 18.\n#### 18\nSo the final answer is $\\boxed{20}$.", "auto", "20"),
        ("A: 18\n\\boxed{20}", "auto", "20"),
        ("\\boxed{20} ... The answer is 18.", "auto", "20"),
        ("#### 18", "boxed", None),
        ("#### 18", "answer_line", None),
        # unfinished work has no answer in "auto"; "last_number" takes any number
        ("so far 3 + 4 = 7 and then", "auto", None),
        ("so far 3 + 4 = 7 and then", "last_number", "7"),
        ("A: 18", "last_number", "18"),
        # a box still to be filled in (copied from the question or the instruction) is no answer
        ("Which option goes in \\boxed{?} below?\nOption B gives 14 and option C gives 12, so C.\n#### C", "auto", "C"),
        ("Fill in $\\boxed{\\_\\_}$ so that 3 + \\_\\_ = 10.\n10 - 3 = 7\nAnswer: 7", "auto", "7"),
        ("(Write the result in \\boxed{\\text{answer}}.) 5 + 7 = 12\nThe answer is 12.", "auto", "12"),
        ("The blank $\\square$ in \\boxed{\\square + 2 = 5} is 3, so \\boxed{3}.", "auto", "3"),
        ("x = \\boxed{5}. Next: what is \\boxed{?}", "boxed", "5"),
        ("\\boxed{?}\nworking ... so the value is \\boxed{9}\n#### 8", "auto", "9"),  # a real box still wins
        ("I cannot tell: \\boxed{?}", "boxed", None),
        ("I cannot tell: \\boxed{?}", "auto", None),
        # an answer given only in words after a program's output: "auto" reads no bare number; "last_number" does
        ("```python\nprint(40 // 4)\n```\n```output\n10\n```\nTen men can stay upright.", "auto", None),
        ("```python\nprint(40 // 4)\n```\n```output\n10\n```\nTen men can stay upright.", "last_number", "10"),
        # a percentage keeps its sign in the box; the verifier compares it (test_percentages)
        ("so the share is \\boxed{35.0\\%}", "auto", "35.0\\%"),
        # times of day stay whole
        ("She arrives at 4:30 p.m.\nA: 4:30 p.m.", "auto", "4:30 p.m"),
        ("The answer is 16:05.", "auto", "16:05"),
        ("so she leaves at 4:30 pm.", "last_number", "4:30 pm"),
    ],
)
def test_extract_answer(text, fmt, expected):
    assert extract_answer(text, fmt) == expected


@pytest.mark.parametrize("content", ["?", "??", "", "\\_\\_\\_", "\\square", "\\ldots", "...", "\\text{?}",
                                     "\\text{answer}", "your answer", "\\quad"])
def test_placeholders(content):
    assert is_placeholder(content)


@pytest.mark.parametrize("content", ["A", "x", "0", "5", "-", "\\text{Evelyn}", "\\frac{1}{2}", "x = ?", "\\emptyset"])
def test_not_placeholders(content):
    assert not is_placeholder(content)


@pytest.mark.parametrize(
    "answer, number",
    [("35\\%", "35"), ("35.0\\%", "35.0"), ("35%", "35"), ("35 \\%", "35"), ("35\\,\\%", "35"),
     ("35\\text{\\%}", "35"), ("35 percent", "35"), ("1,200\\%", "1200"), ("-2.5\\%", "-2.5"),
     ("35", None), ("x\\%", None), ("35\\% + 1", None)],
)
def test_percent_number(answer, number):
    assert percent_number(answer) == number


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("4:30 p.m.", "4:30 PM", True),
        ("4:30 p.m.", "16:30", True),
        ("4:30pm", "4:30 a.m.", False),
        ("4:30", "4:30 p.m.", True),  # no am/pm: either half of the day
        ("4:30", "16:30", True),
        ("4:30", "4:03", False),
        ("12:15 a.m.", "0:15", True),
        ("12:15 p.m.", "12:15", True),
        ("12:15 a.m.", "12:15 p.m.", False),
        ("$7:05$", "7:05", True),
        ("\\text{7:05 a.m.}", "7:05", True),
    ],
)
def test_same_time(a, b, expected):
    assert same_time(a, b) is expected
    assert same_time(b, a) is expected


@pytest.mark.parametrize("text", ["4/30", "430", "25:30", "4:60", "13:30 p.m.", "3:2", "1:2:3", "x"])
def test_not_a_time(text):
    assert time_of_day(text) is None
    assert same_time(text, "4:30") is None


def test_times_are_compared_as_times(pool):
    completions = ["A: 4:30 p.m.", "The answer is 4:30.", "#### 16:30", "\\boxed{4:30 \\text{ a.m.}}",
                   "\\boxed{4:03}", "\\boxed{\\frac{2}{15}}", "\\boxed{4:30}"]
    golds = ["4:30 p.m."] * 6 + ["2/15"]
    # math-verify reads 4:30 as the ratio 4/30 = 2/15: a time is never equal to it, and a ratio gold still is
    assert pool.verify_batch(completions, golds) == [True, True, True, False, False, False, True]


def test_extract_answer_is_bounded():
    huge = "\\boxed{" + "1" * (MAX_ANSWER_CHARS + 1) + "}"
    assert extract_answer(huge) is None
    start = time.perf_counter()
    assert extract_answer("x" * 1_000_000 + "\\boxed{5}") == "5"
    assert extract_answer("\\boxed{" * 200_000) is None
    assert extract_answer("{" * 500_000 + "}" * 500_000) is None
    assert time.perf_counter() - start < 1.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("{}\\$^!()[]:\n 0123456789x") + ["\\boxed", "\\fbox", "Answer:"])).map("".join))
def test_extraction_and_prescreen_never_raise(text):
    for fmt in ("auto", "boxed", "answer_line"):
        answer = extract_answer(text, fmt)
        if answer is not None:
            assert len(answer) <= MAX_ANSWER_CHARS
            prescreen(answer)
    prescreen(text)


@pytest.mark.parametrize(
    "answer",
    [
        "9^9^9^9^9",
        "9^{9^{9^{9}}}",
        "10^{10^{10}}",
        "2^{100000000}",
        "100000!",
        "(10!)!",
        "{" * 40 + "1" + "}" * 40,
        "\\frac{1}{2",
        "1}{2",
        "x" * (MAX_ANSWER_CHARS + 1),
    ],
)
def test_prescreen_rejects(answer):
    assert prescreen(answer) is not None


@pytest.mark.parametrize(
    "answer", ["x^2+2x+1", "2^{10}", "10^{100}", "x^{2^{3}}", "\\frac{10!}{3!}", "n!!", "[2,5)", "90^\\circ", "e^{i\\pi}"]
)
def test_prescreen_accepts(answer):
    assert prescreen(answer) is None


# --- equivalence ------------------------------------------------------------------------------------------------

EQUIVALENT = [
    ("25", "25"),
    ("\\frac{14}{3}", "\\dfrac{14}{3}"),
    ("\\frac{14}{3}", "14/3"),
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{1}{2}", "1/2"),
    ("0.5", "\\frac12"),
    ("-\\frac{1}{2}", "-0.5"),
    ("3\\frac{1}{2}", "\\frac{7}{2}"),  # mixed number
    ("3\\frac{1}{2}", "3.5"),
    ("2", "2.0"),
    ("\\text{Evelyn}", "\\text{Evelyn}"),
    ("\\text{Evelyn}", "Evelyn"),
    ("90^\\circ", "90"),
    ("90^\\circ", "90^{\\circ}"),
    ("(3, \\frac{\\pi}{2})", "(3,\\pi/2)"),
    ("[2,5)", "[2, 5)"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("1000", "1,000"),
    ("1000", "1{,}000"),
    ("1000", "1\\,000"),
    ("1,000", "1000"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\sqrt{2}", "2^{1/2}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("5", "x=5"),
    ("50\\%", "50"),
    ("10", "10\\text{ cm}"),
    ("\\infty", "\\infty"),
]

NOT_EQUIVALENT = [
    ("25", "26"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("\\frac{1}{2}", "-0.5"),
    ("1/3", "0.33"),
    ("3\\frac{1}{2}", "\\frac{3}{2}"),
    ("2", "2.00001"),
    ("\\text{Evelyn}", "\\text{Bob}"),
    ("90^\\circ", "45^\\circ"),
    ("(3, \\frac{\\pi}{2})", "(\\frac{\\pi}{2}, 3)"),
    ("(3, \\frac{\\pi}{2})", "(3, \\frac{\\pi}{3})"),
    ("[2,5)", "[2,5]"),
    ("[2,5)", "(2,5)"),
    ("1000", "100"),
    ("x^2+2x+1", "(x-1)^2"),
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}"),
    ("\\pi", "3.14"),
]


@pytest.mark.parametrize("gold, pred", EQUIVALENT)
def test_equivalent(pool, gold, pred):
    assert pool.verify_batch([f"The answer is $\\boxed{{{pred}}}$."], [gold]) == [True]


@pytest.mark.parametrize("gold, pred", NOT_EQUIVALENT)
def test_not_equivalent(pool, gold, pred):
    assert pool.verify_batch([f"The answer is $\\boxed{{{pred}}}$."], [gold]) == [False]


def test_last_boxed_wins_and_module_api():
    completion = "First I get \\boxed{3} ... wait, that is wrong: \\boxed{5}"
    assert verify(completion, "5") is True
    assert verify(completion, "3") is False
    assert verify_batch([completion, completion], ["5", "3"]) == [True, False]
    assert verify("\\boxed{\\frac{10}{4}}", "2.5") is True
    verifier.default_pool().warmup()  # integer answers never reach the workers; let them finish starting


def test_gsm8k_styles_verified(pool):
    completions = ["9 * 2 = 18\n#### 18", "9 * 2 = 18\nA: $18", "The answer is 18 dollars.", "#### 1,080",
                   "The answer is 17.", "9 * 2 = 18\n#### 18\n\\boxed{17}"]
    assert pool.verify_batch(completions, ["18", "18", "18", "1080", "18", "18"]) == [True] * 4 + [False] * 2


def test_percentages(pool):
    # a percentage matches its number (35 % for a gold of 35) and its fraction (0.35), and nothing else
    completions = ["\\boxed{35.0\\%}", "\\boxed{35\\%}", "The answer is 35%.", "\\boxed{12.5\\%}", "\\boxed{35\\%}",
                   "\\boxed{35.0}", "\\boxed{100\\%}",
                   "\\boxed{35.5\\%}", "\\boxed{35\\%}", "\\boxed{3.5\\%}", "\\boxed{36.0\\%}"]
    golds = ["35", "35", "35", "12.5", "0.35", "35\\%", "1", "35", "36", "0.35", "35"]
    assert pool.verify_batch(completions, golds) == [True] * 7 + [False] * 4


def test_placeholder_box_loses_to_a_final_line(pool):
    completion = "Which letter goes in \\boxed{?}\nA is too small, B too large; C fits.\n#### C"
    assert pool.verify_batch([completion, completion], ["C", "B"]) == [True, False]


def test_answer_line(pool):
    completions = ["Let me think.\nAnswer: $\\frac{14}{3}$", "Answer: 12\nAnswer: 13.", "Answer: 1,000", "no answer"]
    assert pool.verify_batch(completions, ["14/3", "13", "1000", "1"], answer_format="answer_line") == [
        True, True, True, False
    ]


def test_missing_or_invalid_answer_is_false(pool):
    golds = ["5", "5", "5", "5", "5"]
    completions = ["3 + 2 = 5", "\\boxed{5", "", None, "\\boxed{}"]
    assert pool.verify_batch(completions, golds) == [False] * 5
    assert pool.verify_batch(["\\boxed{5}"], [""]) == [False]
    with pytest.raises(ValueError):
        pool.verify_batch(["\\boxed{5}"], ["5", "6"])
    with pytest.raises(ValueError):
        pool.verify_batch(["\\boxed{5}"], ["5"], answer_format="latex")


# --- isolation and timeouts -------------------------------------------------------------------------------------


def _normal_items(n: int) -> list[tuple[str, str, bool]]:
    templates = [
        lambda k: (f"\\boxed{{\\frac{{{k}}}{{{k + 1}}}}}", f"\\frac{{{2 * k}}}{{{2 * k + 2}}}", True),
        lambda k: (f"Answer: ${k}.5$", f"\\frac{{{2 * k + 1}}}{{2}}", True),
        lambda k: (f"\\boxed{{{k}}}", str(k + 1), False),
        lambda k: (f"\\boxed{{({k}, {k + 1})}}", f"({k},{k + 1})", True),
        lambda k: (f"\\boxed{{[{k}, {k + 2})}}", f"[{k},{k + 2}]", False),
        lambda k: (f"\\boxed{{x^2+{2 * k + 1}x}}", f"x(x+{2 * k + 1})", True),
        lambda k: (f"\\boxed{{{k + 1},000}}", f"{k + 1}000", True),
        lambda k: (f"\\boxed{{{k}^\\circ}}", f"{k + 1}^\\circ", False),
        lambda k: (f"\\boxed{{\\sqrt{{{4 * k * k}}}}}", str(2 * k), True),
    ]
    return [templates[i % len(templates)](i) for i in range(n)]


# Slow for sympy but not caught by the pre-screen: these really run into the timeout.
SLOW = ["(x+y+z+1)^{30}", "(x+y+z+w+1)^{20}", "10^{10^{3}\\cdot 10^{5}}"]


def _pathological(marker) -> list[str]:
    return [
        "\\boxed{9^9^9^9^9}",
        "\\boxed{100000!}",
        "\\boxed{" + "{" * 400 + "1" + "}" * 400 + "}",
        "\\boxed{" + "1+" * 500_000 + "1}",  # a megabyte
        "\\boxed{10^{10^{10}}}",
        "\\boxed{(10!)!}",
        f"\\boxed{{__import__('os').system('touch {marker}')}}",
    ] + [f"\\boxed{{{s}}}" for s in SLOW]


def test_pathological_batch(pool, tmp_path):
    assert all(prescreen(s) is None for s in SLOW)
    marker = tmp_path / "executed"
    normal = _normal_items(90)
    bad = _pathological(marker)
    assert len(bad) == 10
    completions = [c for c, _, _ in normal]
    golds = [g for _, g, _ in normal]
    positions = list(range(5, 100, 10))  # spread the bad ones through the batch
    for pos, completion in zip(positions, bad):
        completions.insert(pos, completion)
        golds.insert(pos, "7")
    timeouts_before = pool.stats.timeouts
    start = time.monotonic()
    results = pool.verify_batch(completions, golds, timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    assert elapsed < 3 * TIMEOUT, f"batch took {elapsed:.1f} s"
    assert len(results) == 100 and all(isinstance(r, bool) for r in results)
    assert [results[p] for p in positions] == [False] * 10
    normal_results = [r for i, r in enumerate(results) if i not in positions]
    assert normal_results == [expected for _, _, expected in normal]
    assert pool.stats.timeouts - timeouts_before >= len(SLOW)
    assert not marker.exists()


def test_hung_worker_is_killed_and_replaced(faulty_pool):
    pool = faulty_pool
    before = pool.stats.as_dict()
    start = time.monotonic()
    assert pool._run([{"op": "_hang"}], 1.0) == [False]
    assert time.monotonic() - start < 1.0 + 1.5
    after = pool.stats.as_dict()
    assert after["killed"] == before["killed"] + 1
    assert after["restarts"] == before["restarts"] + 1
    assert len(pool._workers) == 2
    assert pool.verify_batch(["\\boxed{\\frac{1}{2}}"], ["0.5"]) == [True]


def test_crashed_workers_are_replaced(faulty_pool):
    pool = faulty_pool
    before = pool.stats.as_dict()
    assert pool._run([{"op": "_exit"}, {"op": "_segfault"}], TIMEOUT) == [False, False]
    after = pool.stats.as_dict()
    assert after["crashes"] == before["crashes"] + 2
    assert after["restarts"] == before["restarts"] + 2
    assert len(pool._workers) == 2 and all(w.proc.poll() is None for w in pool._workers)
    # the replacements verify (a fresh worker's first symbolic check can take seconds on a loaded machine)
    assert pool.verify_batch(["\\boxed{(x+1)^2}"], ["x^2+2x+1"], timeout=30) == [True]


def test_the_shipped_worker_cannot_be_told_to_crash(pool):
    # the shipped worker ignores an op it does not know: no exit (no crash counted), only a request that times out
    before = pool.stats.as_dict()
    assert pool._run([{"op": "_exit"}, {"op": "_segfault"}], 0.5) == [False, False]
    after = pool.stats.as_dict()
    assert after["crashes"] == before["crashes"] and after["timeouts"] == before["timeouts"] + 2
    assert pool.verify_batch(["\\boxed{2}"], ["2"]) == [True]


def test_model_output_is_never_executed(pool, tmp_path):
    marker = tmp_path / "executed"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f'__import__("os").system("touch {marker}")',
        f"\\text{{__import__('os').system('touch {marker}')}}",
        f"(lambda: __import__('os').system('touch {marker}'))()",
        f"eval(\"__import__('os').system('touch {marker}')\")",
    ]
    completions = [f"\\boxed{{{p}}}" for p in payloads] + [f"Answer: {p}" for p in payloads]
    completions += [f"Answer: ${p}$" for p in payloads]
    assert pool.verify_batch(completions, ["1"] * len(completions)) == [False] * len(completions)
    assert verify(f"Answer: __import__('os').system('touch {marker}')", "0", answer_format="answer_line") is False
    assert not marker.exists()
    assert pool.worker_info["eval_guard"] is True


def test_eval_guard_blocks_sympify(tmp_path, monkeypatch):
    sympy = pytest.importorskip("sympy")
    from sympy.parsing import sympy_parser

    monkeypatch.setattr(sympy_parser, "eval_expr", sympy_parser.eval_expr)  # restored after the test
    verifier._install_eval_guard()
    marker = tmp_path / "executed"
    for text in (f"__import__('os').system('touch {marker}')", "open(1)"):
        with pytest.raises(Exception):
            sympy.sympify(text)
        with pytest.raises(Exception):
            sympy_parser.parse_expr(text, evaluate=False)
    assert not marker.exists()
    # What math-verify's LaTeX path legitimately evaluates still works.
    assert sympy.Number("12") == 12
    assert sympy.S("3/2") == sympy.Rational(3, 2)
    assert float(sympy.Number("1.5e3")) == 1500.0


def test_close_stops_workers():
    pool = VerifierPool(workers=1, timeout=TIMEOUT)
    procs = [w.proc for w in pool._workers]
    pool.close()
    assert all(p.poll() is not None for p in procs)
    pool.close()
    with pytest.raises(RuntimeError):
        pool.verify_batch(["\\boxed{1}"], ["1"])


def test_timeout_setting(monkeypatch):
    monkeypatch.setenv("MELRL_VERIFY_TIMEOUT", "3.5")
    assert default_timeout() == 3.5
    monkeypatch.setenv("MELRL_VERIFY_TIMEOUT", "-1")
    with pytest.raises(ValueError):
        default_timeout()
    monkeypatch.delenv("MELRL_VERIFY_TIMEOUT")
    assert default_timeout() == verifier.DEFAULT_TIMEOUT == 5.0


# --- reward -----------------------------------------------------------------------------------------------------


def test_accuracy_reward_strings_and_conversations():
    reward = make_accuracy_reward(timeout=TIMEOUT)
    assert reward.__name__ == "accuracy"
    logged = {}
    rewards = reward(
        prompts=["p"] * 4,
        completions=["\\boxed{\\frac{1}{2}}", "Answer: 4", "no answer", "\\boxed{3}"],
        answer=["0.5", "4", "5", "4"],
        trainer_state=None,
        log_metric=lambda name, value: logged.setdefault(name, value),
    )
    assert rewards == [1.0, 1.0, 0.0, 0.0]
    assert logged["verifier/no_answer"] == 1.0
    conversations = [
        [{"role": "assistant", "content": "so \\boxed{(x+1)^2}"}],
        [{"role": "user", "content": "\\boxed{9}"}, {"role": "assistant", "content": "I get \\boxed{8}"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "Answer: 1,000"}]}],
    ]
    prompts = [[{"role": "user", "content": "q"}]] * 3
    assert reward(prompts=prompts, completions=conversations, answer=["x^2+2x+1", "9", "1000"]) == [1.0, 0.0, 1.0]
    dapo = make_accuracy_reward("answer_line")
    assert dapo(prompts=["p"], completions=["\\boxed{4}\nAnswer: 5"], answer=[5]) == [1.0]
    with pytest.raises(ValueError):
        reward(prompts=["p"], completions=["\\boxed{1}"])


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_workers():
    yield
    verifier._close_default_pool()
