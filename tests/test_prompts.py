"""The default prompts are the paper's (arXiv 2602.10224, Appendix C) word for word; the compact one is ours."""

import hashlib
import os
import re
from pathlib import Path

import pytest

from melrl.method import prompts
from melrl.method.prompts import ANALYSIS_TEMPLATES, analysis_text, replay_text, solve_text

# Stand-ins for the placeholders, filled the same way into the paper's text and into ours.
QUESTION, INCORRECT, CORRECT, EXPERIENCE = "QQQ what is 1 + 1?", "III 1 + 1 = 3", "CCC 1 + 1 = 2", "MMM heuristics"
SOLVE_SLOT = "SSS solve prompt"  # the replay prompt's question is our solve prompt, whichever template

# SHA-256 of `_norm` of each prompt of the paper (Meta-Experience Learning, arXiv 2602.10224, Appendix C "Prompt
# Template"), its placeholders filled with the stand-ins above: {question}, {error_ans}, {correct_ans} of the
# Meta-Experience Prompt; {experience} and {question} (SOLVE_SLOT) of the Empirical Validation Prompt. Computed once
# from the paper's text; `test_digests_are_the_papers` recomputes them where that text is at $MELRL_PAPER_TEXT.
META_EXPERIENCE_PROMPT = "1ba3e0946f4a7a57011475337d9186f2747ec9e74f4299ac5eb4dfdecc6e8272"
EMPIRICAL_VALIDATION_PROMPT = "689eb3b3b6936769fc475b5cc9a68c2787f6bc87c85a8db3a0c9a83404d10146"


def _norm(text: str) -> str:
    """Whitespace-insensitive form. The PDF text writes the tags as "$<$ question $>$": read them as <question>, and
    ignore whitespace around a tag (the paper's layout is lost in its PDF text anyway)."""
    text = re.sub(r"\$<\$\s*(/?)\s*(\w+)\s*\$>\$", r"<\1\2>", text)
    text = re.sub(r"\s*(</?\w+>)\s*", r"\1", text)
    return " ".join(text.split())


def _digest(text: str) -> str:
    return hashlib.sha256(_norm(text).encode("utf-8")).hexdigest()


def _replay_digest(template: str, experience: str = EXPERIENCE) -> str:
    ours = replay_text(QUESTION, experience, template)
    assert ours.count(solve_text(QUESTION, template)) == 1, template
    return _digest(ours.replace(solve_text(QUESTION, template), SOLVE_SLOT))


def test_default_analysis_prompt_is_the_papers_meta_experience_prompt():
    ours = analysis_text(QUESTION, INCORRECT, CORRECT)  # the default is "paper"
    assert _digest(ours) == META_EXPERIENCE_PROMPT
    assert ours == analysis_text(QUESTION, INCORRECT, CORRECT, "paper")
    # the pieces issue 28 names, spelled as in the paper
    for piece in ("Scenario A (Self-Correction)", "Scenario B (Flawless Execution)",
                  "Focus on the “How” of thinking, not the “What” of the answer.",
                  "(Mandatory for incorrect samples)", "Reasoning Pivot (If applicable):",
                  "Robustness Factor (If flawless):", "Reason for Effectiveness:", "Review:", "Insight:", "Action:",
                  "Output Format (Strict Adherence Required)"):
        assert piece in ours, piece


def test_replay_prompt_is_the_papers_empirical_validation_prompt_with_our_solve_prompt_as_its_question():
    for template in prompts.SOLVE_TEMPLATES:
        assert _replay_digest(template) == EMPIRICAL_VALIDATION_PROMPT, template
    ours = replay_text(QUESTION, "  " + EXPERIENCE + "\n", "qwen-boxed")
    assert "You must perform full, in-depth reasoning internally and arrive at the final answer while making full use "\
           "of the information above." in ours
    assert ours.endswith("Answer the following question: " + QUESTION +
                         "\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert ours.index(EXPERIENCE) < ours.index("Now, please fully internalize")


def test_comparison_can_fail():
    # The normalisation is not so loose that a changed word or a swapped pair of solutions would pass.
    assert _digest(analysis_text(QUESTION, CORRECT, INCORRECT)) != META_EXPERIENCE_PROMPT
    assert _digest(analysis_text(QUESTION, INCORRECT, CORRECT).replace("How", "Why")) != META_EXPERIENCE_PROMPT
    assert _digest(analysis_text(QUESTION, INCORRECT, CORRECT, "compact")) != META_EXPERIENCE_PROMPT
    assert _digest(replay_text(QUESTION, EXPERIENCE).replace("in-depth", "deep")) != EMPIRICAL_VALIDATION_PROMPT
    assert _replay_digest("qwen-boxed", experience="MMM other") != EMPIRICAL_VALIDATION_PROMPT
    # whitespace and the PDF's tag spelling do not count
    assert _norm("a  <judge> b </judge>\n c") == _norm("a<judge>b</judge> c") == _norm("a $<$ judge $>$ b</judge> c")


@pytest.mark.skipif(not os.environ.get("MELRL_PAPER_TEXT"),
                    reason="MELRL_PAPER_TEXT (the paper's text, markdown) is not set; the digests above stand for it")
def test_digests_are_the_papers():
    text = Path(os.environ["MELRL_PAPER_TEXT"]).read_text(encoding="utf-8")
    appendix = text[text.index("Appendix C Prompt Template"):]
    analysis, replay = appendix.split("\nMeta-Experience Prompt\n", 1)[1].split("\nEmpirical Validation Prompt\n", 1)
    assert {"{question}", "{error_ans}", "{correct_ans}"} <= set(re.findall(r"\{\w+\}", analysis))
    assert "Note:" in replay and "{experience}" in replay and replay.rstrip().endswith("{question}")
    assert _digest(analysis.replace("{question}", QUESTION).replace("{error_ans}", INCORRECT)
                   .replace("{correct_ans}", CORRECT)) == META_EXPERIENCE_PROMPT
    assert _digest(replay.replace("{experience}", EXPERIENCE).replace("{question}", SOLVE_SLOT)) \
        == EMPIRICAL_VALIDATION_PROMPT


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
