"""`melrl.method.parsing`: the sections of a meta-experience and the leak check's scope; the method modules import
no torch, trl or transformers."""

import json
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melrl.method import prompts
from melrl.method.parsing import MAX_PARSE_CHARS, MetaExperienceFormatError, leak_scope, parse_meta_experience
from tests.helpers import subprocess_env


def test_import_pulls_in_no_torch_trl_transformers():
    code = (
        "import sys, melrl.method.pairs, melrl.method.parsing, melrl.method.leaks, melrl.method.retention\n"
        "heavy = [m for m in ('torch', 'trl', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), check=True)
    assert out.stdout.strip() == ""


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
