import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melrl.method import prompts
from melrl.method.leaks import find_leaks, leaks
from melrl.method.pairs import Pair, select_pairs
from melrl.method.parsing import MAX_PARSE_CHARS, MetaExperienceFormatError, leak_scope, parse_meta_experience
from melrl.method.retention import retention_ratio

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


# ---------------------------------------------------------------------------------------------- import isolation


def test_import_pulls_in_no_torch_trl_transformers():
    code = (
        "import sys, melrl.method.pairs, melrl.method.parsing, melrl.method.leaks, melrl.method.retention\n"
        "heavy = [m for m in ('torch', 'trl', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------------------------- pairs


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
        env = _env() | {"PYTHONHASHSEED": hashseed}
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


# ---------------------------------------------------------------------------------------------- parsing

WELL_FORMED = f"""Let me compare the two solutions.

## {prompts.SECTION_FAILURE}
At the third step the incorrect solution expanded the square and dropped the cross term.
## {prompts.SECTION_PATTERN}
Pattern matching on a familiar identity without checking it.
## {prompts.SECTION_SUCCESS}
The correct solution wrote every term explicitly and checked the expansion.
## {prompts.SECTION_SUMMARY}
I rushed an expansion I thought I knew. From now on I will write out every term.
## {prompts.SECTION_HEURISTICS}
- [Expansion check]: If I expand a power of a sum, then I write all cross terms.
- [Sanity check]: When dealing with an identity,
  I must verify it on a small case.
"""


def test_parses_the_prompt_format():
    m = parse_meta_experience(WELL_FORMED)
    assert m.failure_point.startswith("At the third step")
    assert m.cognitive_pattern == "Pattern matching on a familiar identity without checking it."
    assert m.success_factors.startswith("The correct solution")
    assert m.reflective_summary.startswith("I rushed")
    assert m.heuristics == [
        "[Expansion check]: If I expand a power of a sum, then I write all cross terms.",
        "[Sanity check]: When dealing with an identity, I must verify it on a small case.",
    ]
    d = m.as_dict()
    assert set(d) == {"failure_point", "cognitive_pattern", "success_factors", "reflective_summary", "heuristics",
                      "details"}
    assert d["details"] == {}
    assert json.loads(json.dumps(d)) == d
    assert parse_meta_experience(m.render()) == m


def test_template_headings_are_the_ones_parsed():
    # The headings shown in each analysis prompt are the ones the parser expects.
    for name in (prompts.SECTION_FAILURE, prompts.SECTION_SUCCESS, prompts.SECTION_SUMMARY, prompts.SECTION_HEURISTICS):
        assert f"## {name}\n" in prompts.COMPACT_ANALYSIS_TEMPLATE
    paper = prompts.PAPER_ANALYSIS_TEMPLATE
    for name in (prompts.PAPER_SECTION_FAILURE, prompts.PAPER_SECTION_SUCCESS, prompts.PAPER_SECTION_SUMMARY,
                 prompts.PAPER_SECTION_HEURISTICS, prompts.SECTION_FAILURE, prompts.SECTION_PATTERN):
        assert f". {name} (" in paper or f"• {name}:" in paper, name
    for names in prompts.PAPER_FIELDS.values():
        for name in names:
            assert f"• {name}" in paper, name


# What a policy writes when it follows the paper's output format (Appendix C), with the usual markdown noise.
PAPER_FORMAT = textwrap.dedent(
    """\
    Let me compare the two trajectories.

    **1. Failure Resolution Path & Error Pattern Recognition (Mandatory for incorrect samples)**
    • **Failure Point:** It diverged at the half-angle substitution.
    • **Latent Cognitive Pattern:** Concept conflation.
    **2. Analysis of Success Factors (Mandatory for correct samples)**
    • **Reasoning Pivot (If applicable):** Not applicable.
    • **Robustness Factor (If flawless):** It derived the formula
      from the definition.
    • **Reason for Effectiveness:** A definition cannot be misremembered.
    ### 3. First-Person Reflective Summary (Mandatory)
    • Review: I conflated two angles.
    • Insight: The full angle matters.
    • Action: I will check the figure before using a formula.
    ### 4. Subject Heuristics (Internalized Experience) (Mandatory)
    • [Angle rule]: If I use 2R sin(θ), then θ must be the full angle.
    • [Consistency]: When a formula meets a figure, I must check the figure first.
    """
)


def test_parses_the_paper_output_format_with_its_fields():
    m = parse_meta_experience(PAPER_FORMAT)
    assert m.failure_point == "It diverged at the half-angle substitution."
    assert m.cognitive_pattern == "Concept conflation."
    assert m.success_factors.startswith("• **Reasoning Pivot (If applicable):** Not applicable.")
    assert m.reflective_summary.startswith("• Review: I conflated two angles.")
    assert m.heuristics == [
        "[Angle rule]: If I use 2R sin(θ), then θ must be the full angle.",
        "[Consistency]: When a formula meets a figure, I must check the figure first.",
    ]
    assert m.details == {
        "Reasoning Pivot": "Not applicable.",
        "Robustness Factor": "It derived the formula\nfrom the definition.",
        "Reason for Effectiveness": "A definition cannot be misremembered.",
        "Review": "I conflated two angles.",
        "Insight": "The full angle matters.",
        "Action": "I will check the figure before using a formula.",
    }
    assert parse_meta_experience(m.render()) == m
    # a field label belongs to its own section only: "Review:" in the success factors is plain content
    moved = PAPER_FORMAT.replace("• Review: I conflated", "I conflated").replace(
        "• **Reasoning Pivot (If applicable):** Not applicable.", "Review: not applicable.")
    assert "Review" not in parse_meta_experience(moved).details


def _paper_output_format() -> str:
    template = prompts.PAPER_ANALYSIS_TEMPLATE
    return template[template.index("Output Format") : template.index("\n\nHere the question")]


def test_paper_template_echo_is_rejected():
    with pytest.raises(MetaExperienceFormatError) as err:
        parse_meta_experience(_paper_output_format())
    assert set(err.value.empty) == {"Failure Point", "Success Factors", "Reflective Summary", "Heuristics"}
    # the echo followed by a real analysis: the analysis wins, the echoed note is no heuristic
    assert parse_meta_experience(_paper_output_format() + "\n\n" + PAPER_FORMAT) == parse_meta_experience(PAPER_FORMAT)


def test_leak_scope_is_summary_and_heuristics_parsed_or_not():
    scope = leak_scope(PAPER_FORMAT)
    assert "I conflated two angles." in scope and "[Angle rule]" in scope
    assert "half-angle substitution" not in scope and "definition" not in scope
    # an analysis missing its failure section does not parse, and its summary and heuristics are still found
    unparsed = PAPER_FORMAT.split("**2. Analysis")[0].split("**1.")[0] + PAPER_FORMAT.split("### 3.")[1]
    with pytest.raises(MetaExperienceFormatError):
        parse_meta_experience(unparsed)
    assert "I conflated two angles." in leak_scope(unparsed)
    assert leak_scope("The first solution added 5 and 7 wrongly; the answer is 12.") is None
    with pytest.raises(TypeError):
        leak_scope(None)


@pytest.mark.parametrize(
    "fmt",
    ["# {name}", "### {name}:", "**{name}**", "**{name}:**", "**{name}**:", "{i}. {name}:", "{i}. **{name}**",
     "**{i}. {name}**", "{name}:", "{name}", "{NAME}", "### {i}) {name}", "- **{name}:**", "__{name}__",
     "{i}. {name} (mandatory)", "## {lower}:"],
)
def test_heading_variants(fmt):
    fmt = fmt.replace("{NAME}", "{name_upper}").replace("{lower}", "{name_lower}")

    def fill(i, name):
        return fmt.format(i=i, name=name, name_upper=name.upper(), name_lower=name.lower())

    names = ["Failure Point", "Latent Cognitive Pattern", "Success Factors", "Reflective Summary", "Heuristics"]
    bodies = ["It diverged at step two.", "Intuitive bias.", "It checked the domain.", "I will check the domain.",
              "- If a root appears, then check the domain.\n- When squaring, I must verify both signs."]
    text = "\n".join(fill(i + 1, n) + "\n" + b for i, (n, b) in enumerate(zip(names, bodies)))
    m = parse_meta_experience(text)
    assert m.failure_point == "It diverged at step two."
    assert m.cognitive_pattern == "Intuitive bias."
    assert m.success_factors == "It checked the domain."
    assert m.reflective_summary == "I will check the domain."
    assert m.heuristics == ["If a root appears, then check the domain.", "When squaring, I must verify both signs."]


def test_inline_content_after_colon():
    text = (
        "**Failure Point:** diverged at step two.\n"
        "Success Factors: it checked the domain.\n"
        "Reflective Summary - I will check the domain.\n"
        "Heuristics:\n1. If a root appears, then check the domain.\n2) When squaring, verify signs.\n"
    )
    m = parse_meta_experience(text)
    assert m.failure_point == "diverged at step two."
    assert m.cognitive_pattern == ""
    assert m.success_factors == "it checked the domain."
    assert m.reflective_summary == "I will check the domain."
    assert m.heuristics == ["If a root appears, then check the domain.", "When squaring, verify signs."]


def test_paper_layout_and_long_names():
    text = textwrap.dedent(
        """\
        1. Failure Resolution Path & Error Pattern Recognition (Mandatory for incorrect samples)
        • Failure Point: It diverged at the half-angle substitution.
        • Latent Cognitive Pattern: Concept conflation.
        2. Analysis of Success Factors (Mandatory for correct samples)
        • Reasoning Pivot: It re-derived the formula.
        3. First-Person Reflective Summary (Mandatory)
        I conflated two angles.
        4. Subject Heuristics (Internalized Experience) (Mandatory)
        • [Angle rule]: If I use 2R sin(θ), then θ must be the full angle.
        • [Consistency]: When a formula meets a figure, I must check the figure first.
        """
    )
    m = parse_meta_experience(text)
    assert m.failure_point == "It diverged at the half-angle substitution."
    assert m.cognitive_pattern == "Concept conflation."
    assert m.success_factors == "• Reasoning Pivot: It re-derived the formula."
    assert m.reflective_summary == "I conflated two angles."
    assert m.heuristics == [
        "[Angle rule]: If I use 2R sin(θ), then θ must be the full angle.",
        "[Consistency]: When a formula meets a figure, I must check the figure first.",
    ]
    long_names = (
        "## Failure Resolution Path\nIt diverged.\n## Analysis of Success Factors\nIt checked.\n"
        "## First Person Reflective Summary\nI learned.\n## Subject Heuristics\n- If x, then y.\n"
    )
    m = parse_meta_experience(long_names)
    assert (m.failure_point, m.success_factors, m.reflective_summary, m.heuristics) == (
        "It diverged.", "It checked.", "I learned.", ["If x, then y."]
    )


def test_heuristics_without_bullets_one_per_line():
    text = WELL_FORMED.split("## Heuristics")[0] + "## Heuristics\nIf a, then b.\n\nWhen c, I check d.\n"
    assert parse_meta_experience(text).heuristics == ["If a, then b.", "When c, I check d."]


def test_prose_starting_with_a_section_name_is_content():
    text = WELL_FORMED.replace(
        "I rushed an expansion",
        "Success factors were clear in hindsight.\nHeuristics are useful.\nI rushed an expansion",
    )
    m = parse_meta_experience(text)
    assert m.reflective_summary.startswith("Success factors were clear in hindsight.\nHeuristics are useful.")
    assert m.success_factors.startswith("The correct solution")


def test_repeated_heading_last_nonempty_wins():
    echo = prompts.COMPACT_ANALYSIS_TEMPLATE.split("(use exactly these headings):\n")[1].split("\n\nHere are")[0]
    m = parse_meta_experience(echo + "\n\n" + WELL_FORMED)
    assert m == parse_meta_experience(WELL_FORMED)


def test_template_echo_is_rejected():
    echo = prompts.COMPACT_ANALYSIS_TEMPLATE.split("(use exactly these headings):\n")[1].split("\n\nHere are")[0]
    with pytest.raises(MetaExperienceFormatError) as err:
        parse_meta_experience(echo)
    assert set(err.value.empty) == {"Failure Point", "Success Factors", "Reflective Summary", "Heuristics"}


@pytest.mark.parametrize("section", ["Failure Point", "Success Factors", "Reflective Summary", "Heuristics"])
def test_missing_required_section(section):
    lines = WELL_FORMED.splitlines()
    start = lines.index(f"## {section}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    text = "\n".join(lines[:start] + lines[end:])
    with pytest.raises(MetaExperienceFormatError, match=f"missing section: {section}") as err:
        parse_meta_experience(text)
    assert err.value.missing == (section,)
    assert isinstance(err.value, ValueError)


def test_cognitive_pattern_is_optional():
    pattern = "## Latent Cognitive Pattern\nPattern matching on a familiar identity without checking it.\n"
    text = WELL_FORMED.replace(pattern, "")
    assert parse_meta_experience(text).cognitive_pattern == ""


@pytest.mark.parametrize("section", ["Failure Point", "Success Factors", "Reflective Summary", "Heuristics"])
def test_empty_required_section(section):
    lines = WELL_FORMED.splitlines()
    start = lines.index(f"## {section}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    text = "\n".join(lines[: start + 1] + ["", "   ", "---"] + lines[end:])
    with pytest.raises(MetaExperienceFormatError, match=f"empty section: {section}") as err:
        parse_meta_experience(text)
    assert err.value.empty == (section,)


def test_heuristics_with_only_a_preamble_are_empty():
    text = WELL_FORMED.split("## Heuristics")[0] + "## Heuristics\n- \n- \n"
    with pytest.raises(MetaExperienceFormatError, match="empty section: Heuristics"):
        parse_meta_experience(text)


@pytest.mark.parametrize("cut", [0, 10, 60, 150, 250, 330, 420])
def test_truncated_mid_output(cut):
    head = WELL_FORMED[: WELL_FORMED.index("## Heuristics")]
    with pytest.raises(MetaExperienceFormatError):
        parse_meta_experience(head[: len(head) - cut])


@pytest.mark.parametrize(
    "garbage",
    ["", " ", "\n\n\n", "hello world", "####", "**", "1.", "Heuristics", "## Heuristics\n- only this",
     "\x00\ud800\U0001f600", "Failure Point" * 1000, "\r\n".join(["## Success Factors"] * 50)],
)
def test_garbage_raises_format_error(garbage):
    with pytest.raises(MetaExperienceFormatError):
        parse_meta_experience(garbage)


def test_non_str_is_a_type_error():
    with pytest.raises(TypeError):
        parse_meta_experience(None)


@pytest.mark.parametrize(
    "adversarial",
    [
        "#" * 200_000,
        "*" * 200_000,
        ("#" * 6 + " " * 8 + "*" * 3 + "1." + "Failure" + " " * 50) * 3000,
        "\n".join(["##   **1.  Failure   Point" + "-" * 250] * 2000),
        "\n".join(["- " * 140 + "Heuristics"] * 2000),
        "1.1.1." * 40_000,
        WELL_FORMED * 2000,
        "## Failure Point\n" + "x" * 60_000 + "\n## Success Factors\nok\n## Reflective Summary\nI\n## Heuristics\n- h",
    ],
)
def test_adversarial_input_is_fast(adversarial):
    t0 = time.perf_counter()
    try:
        parse_meta_experience(adversarial)
    except MetaExperienceFormatError:
        pass
    assert time.perf_counter() - t0 < 2.0


def test_only_the_first_max_chars_are_read():
    text = "x" * MAX_PARSE_CHARS + "\n" + WELL_FORMED
    with pytest.raises(MetaExperienceFormatError, match="missing"):
        parse_meta_experience(text)


_heading_bits = st.sampled_from(
    ["## ", "**", "1. ", "- ", ":", "\n", " ", "Failure Point", "Success Factors", "Reflective Summary",
     "Heuristics", "Latent Cognitive Pattern", "Subject Heuristics", "(", ")", "•", "---", "```", "I will", "x"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=2000), st.lists(_heading_bits, max_size=80).map("".join)))
def test_arbitrary_text_only_raises_format_error(text):
    try:
        m = parse_meta_experience(text)
    except MetaExperienceFormatError as e:
        assert str(e)
        return
    assert m.failure_point and m.success_factors and m.reflective_summary and m.heuristics
    assert all(h.strip() == h and h for h in m.heuristics)


# ---------------------------------------------------------------------------------------------- leaks


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
    assert time.perf_counter() - t0 < 5.0


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


# ---------------------------------------------------------------------------------------------- retention


def test_retention_ratio():
    assert retention_ratio(0, 0) == 0.0
    assert retention_ratio(3, 4) == 0.75
    assert retention_ratio(5, 5) == 1.0
    for bad in [(-1, 3), (4, 3), (0, -1)]:
        with pytest.raises(ValueError):
            retention_ratio(*bad)
