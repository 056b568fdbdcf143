"""The default prompts are the paper's (Appendix C) word for word; the compact one is ours."""

import re
from pathlib import Path

import pytest

from melrl.method import prompts
from melrl.method.prompts import ANALYSIS_TEMPLATES, analysis_text, replay_text, solve_text

PAPER = Path("/work/shared/paper/mel-paper.md")

# Stand-ins for the placeholders, filled the same way into the paper's text and into ours.
QUESTION, INCORRECT, CORRECT, EXPERIENCE = "QQQ what is 1 + 1?", "III 1 + 1 = 3", "CCC 1 + 1 = 2", "MMM heuristics"


def _appendix_c() -> tuple[str, str]:
    """(Meta-Experience Prompt, Empirical Validation Prompt) as the paper file gives them."""
    if not PAPER.exists():
        pytest.skip(f"the paper's text is not here ({PAPER}); nothing to compare the prompts with")
    text = PAPER.read_text(encoding="utf-8")
    appendix = text[text.index("Appendix C Prompt Template") :]
    analysis = appendix.split("\nMeta-Experience Prompt\n", 1)[1]
    analysis, replay = analysis.split("\nEmpirical Validation Prompt\n", 1)
    return analysis, replay


def _norm(text: str) -> str:
    """Whitespace-insensitive form. The PDF text writes the tags as "$<$ question $>$": read them as <question>, and
    ignore whitespace around a tag (the paper's layout is lost in its PDF text anyway)."""
    text = re.sub(r"\$<\$\s*(/?)\s*(\w+)\s*\$>\$", r"<\1\2>", text)
    text = re.sub(r"\s*(</?\w+>)\s*", r"\1", text)
    return " ".join(text.split())


def test_default_analysis_prompt_is_the_papers_meta_experience_prompt():
    paper, _ = _appendix_c()
    assert {"{question}", "{error_ans}", "{correct_ans}"} <= set(re.findall(r"\{\w+\}", paper))
    expected = paper.replace("{question}", QUESTION).replace("{error_ans}", INCORRECT).replace("{correct_ans}", CORRECT)
    ours = analysis_text(QUESTION, INCORRECT, CORRECT)  # the default is "paper"
    assert _norm(ours) == _norm(expected)
    assert ours == analysis_text(QUESTION, INCORRECT, CORRECT, "paper")
    # the pieces issue 28 names, spelled as in the paper
    for piece in ("Scenario A (Self-Correction)", "Scenario B (Flawless Execution)",
                  "Focus on the “How” of thinking, not the “What” of the answer.",
                  "(Mandatory for incorrect samples)", "Reasoning Pivot (If applicable):",
                  "Robustness Factor (If flawless):", "Reason for Effectiveness:", "Review:", "Insight:", "Action:",
                  "Output Format (Strict Adherence Required)"):
        assert piece in ours, piece


def test_replay_prompt_is_the_papers_empirical_validation_prompt_with_our_solve_prompt_as_its_question():
    _, paper = _appendix_c()
    assert "Note:" in paper and "{experience}" in paper and paper.rstrip().endswith("{question}")
    for template in prompts.SOLVE_TEMPLATES:
        # the question is our solve prompt, which says how the final answer must be written
        expected = paper.replace("{experience}", EXPERIENCE).replace("{question}", solve_text(QUESTION, template))
        ours = replay_text(QUESTION, EXPERIENCE, template)
        assert _norm(ours) == _norm(expected), template
    ours = replay_text(QUESTION, "  " + EXPERIENCE + "\n", "qwen-boxed")
    assert "You must perform full, in-depth reasoning internally and arrive at the final answer while making full use "\
           "of the information above." in ours
    assert ours.endswith("Answer the following question: " + QUESTION +
                         "\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert ours.index(EXPERIENCE) < ours.index("Now, please fully internalize")


def test_comparison_can_fail():
    # The normalisation is not so loose that a changed word or a swapped pair of solutions would pass.
    paper, replay = _appendix_c()
    expected = paper.replace("{question}", QUESTION).replace("{error_ans}", INCORRECT).replace("{correct_ans}", CORRECT)
    assert _norm(analysis_text(QUESTION, CORRECT, INCORRECT)) != _norm(expected)
    assert _norm(analysis_text(QUESTION, INCORRECT, CORRECT).replace("How", "Why")) != _norm(expected)
    assert _norm(analysis_text(QUESTION, INCORRECT, CORRECT, "compact")) != _norm(expected)
    assert _norm(replay_text(QUESTION, EXPERIENCE).replace("in-depth", "deep")) != _norm(
        replay.replace("{experience}", EXPERIENCE).replace("{question}", solve_text(QUESTION)))


def test_solutions_in_the_papers_order_in_both_prompts():
    for name in ANALYSIS_TEMPLATES:
        text = analysis_text(QUESTION, INCORRECT, CORRECT, name)
        assert text.index(QUESTION) < text.index(INCORRECT) < text.index("Incorrect</judge>") < text.index(CORRECT)
        assert text.rstrip().endswith("<judge>Correct</judge>")


def test_compact_prompt_is_todays_markdown_template():
    text = analysis_text(QUESTION, INCORRECT, CORRECT, "compact")
    assert "(use exactly these headings)" in text and f"## {prompts.SECTION_HEURISTICS}\n" in text
    assert "Scenario A" not in text


def test_braces_in_solutions_are_kept():
    text = analysis_text("f(x) = {x}", "\\boxed{3}", "\\frac{1}{2} {correct_ans}")
    assert "\\boxed{3}" in text and "\\frac{1}{2} {correct_ans}" in text and "f(x) = {x}" in text
    assert "\\boxed{2}" in replay_text("{q}", "\\boxed{2} {experience}")


def test_unknown_analysis_prompt_names_the_choices():
    with pytest.raises(ValueError, match="compact.*paper"):
        analysis_text(QUESTION, INCORRECT, CORRECT, "verbatim")
