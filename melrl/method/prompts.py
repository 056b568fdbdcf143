"""Prompt templates: solving (`qwen-boxed`, `dapo`), meta-experience analysis and replay validation.

The analysis and replay prompts are the paper's (Appendix C), word for word, by default; `analysis_prompt:
compact` selects our shorter analysis prompt instead.

Every prompt is built as one user message and rendered through the tokenizer's chat template when it has one,
as plain text otherwise (`render`). Rollouts, analysis and replay therefore share one code path.
"""

from __future__ import annotations

import re

SOLVE_TEMPLATES: dict[str, str] = {
    "qwen-boxed": "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    "dapo": (
        "Solve the following math problem step by step. The last line of your response should be of the form "
        "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{problem}\n\n"
        'Remember to put your answer on its own line after "Answer:".'
    ),
    # For very small models (the CPU demo): they rarely box an answer but usually state it last.
    "short": "{problem} Answer with a number.",
}

# How the verifier finds the final answer for each template.
ANSWER_FORMAT: dict[str, str] = {"qwen-boxed": "boxed", "dapo": "answer_line", "short": "last_number"}

# ------------------------------------------------------------------------------------------------------------
# The paper's prompts (Appendix C), the one place their text lives. Line breaks are ours (the paper's PDF text
# has none that mean anything); every word, mark and placeholder is the paper's. tests/test_prompts.py compares
# both with the paper's text.
# ------------------------------------------------------------------------------------------------------------

# Appendix C, "Meta-Experience Prompt", verbatim. Placeholders: {question}, {error_ans} (the incorrect solution,
# shown first) and {correct_ans}; braces of the text itself are doubled for str.format ("$x^{2}$", as the paper
# file gives it, is written "$x^{{2}}$").
PAPER_ANALYSIS_TEMPLATE = """You are a Meta-Cognitive Reasoning Analyst specializing in self-reflection, error root-cause analysis, and the extraction of generalizable heuristics. You are provided with multiple solution trajectories for the same problem. Note that the labels Correct or Incorrect apply to the final answer, but the reasoning process itself may contain twists and turns. Your task is to conduct a deep comparative autopsy of the thinking processes. You must identify the structural differences in cognition that led to success or failure, and synthesize these into abstract principles for future use.

Core Analysis Requirements:
1. Deep Dive into Correct Trajectories (Resilience & Robustness Analysis):
• Scenario A (Self-Correction): If you find the reasoning contains initial errors or uncertainties, look for moments of self-correction. What triggered the realization? What structural insight allowed the reasoning to pivot back to the right track?
• Scenario B (Flawless Execution): When every step of the reasoning is correct from the start, identify the Foundational “Immunity”. What specific definition, clear knowledge representation, or disciplined step-by-step verification prevented this Agent from falling into the traps that the Incorrect Agent fell into?
• Goal: Extract the specific logic validation technique or robust mental representation that saved the solution.
2. Deep Dive into Incorrect Trajectories (Vulnerability Analysis):
• You must identify not only where the math/logic went wrong, but also why the reasoning drifted.
• Identify: The “Bifurcation Point” where a correct start turned into a hallucination or logic gap.
• Analyze: The latent cognitive defect (e.g., concept conflation, rigid mindset, overlooking edge cases, intuitive bias) that caused the error.
• Identify: What specific knowledge point or constraint was violated?
3. Comparative Synthesis:
• Contrast the Solutions and Decision Boundaries. Why did the successful trajectory avoid the trap that the failed one fell into?
• What structural insight did the winner have that the loser missed? (e.g., The winner treated the problem as a geometric issue, while the loser got stuck in algebra).
4. Strict Generalization Constraint:
• Forbidden: Do NOT mention the specific numbers, variables, or exact answer of the current problem in your “Heuristics” or “Reflective Summary”.
• Required: Convert specific lessons into abstract heuristics (e.g., instead of “The integral of $x^{{2}}$ is…”, use “When integrating polynomial functions…”). Formulate them as conditionally triggered rules (“If…Then…”, “When dealing with [Concept X]…I should…”).

Output Format (Strict Adherence Required)
1. Failure Resolution Path & Error Pattern Recognition (Mandatory for incorrect samples)
• Failure Point: Identify the exact step where logic diverged. Did it start correctly? Where did the drift happen?
• Latent Cognitive Pattern: Reveal the deep-seated reasoning defect. Was it a bias? A missing prerequisite? A misunderstanding of the prompt’s intent? Do not list surface-level calculation errors.
2. Analysis of Success Factors (Mandatory for correct samples)
• Reasoning Pivot (If applicable): If the path involved self-correction, describe the moment of realization and the strategy used to fix it.
• Robustness Factor (If flawless): If the path was perfect, explain the fundamental concept or structural approach that effectively “immunized” the reasoning against common errors.
• Reason for Effectiveness: Why did this perspective work? What fundamental logic did it satisfy?
3. First-Person Reflective Summary (Mandatory)
Write a meta-cognitive reflection from the first-person perspective (“I”).
• Review: Briefly review the thinking process differences.
• Insight: Discuss the specific knowledge point or cognitive habit that was critical.
• Action: Explain how you will restructure your approach to avoid the identified “Internal Reasoning Defects” in the future. Focus on the “How” of thinking, not the “What” of the answer.
4. Subject Heuristics (Internalized Experience) (Mandatory)
• [Pattern Name]: If [abstract condition] occurs, then [abstract action]…
• [Pattern Name]: When dealing with [concept type], I must strictly verify [constraint]…

(Note: These must be applicable to *future* problems of a similar class, completely stripped of this problem’s specifics.)

Here the question and the corresponding solutions.
<question>
{question}
</question>
Solution 1:
<answer>
{error_ans}
</answer>
<judge>Incorrect</judge>
Solution 2:
<answer>
{correct_ans}
</answer>
<judge>Correct</judge>"""

# Appendix C, "Empirical Validation Prompt", verbatim. Its {question} is filled with our solve prompt for the
# question (`solve_text`: the problem followed by the template's instruction on how to write the final answer,
# e.g. "put your final answer within \\boxed{}"), so that the replay answer is extracted and verified exactly as a
# rollout's. No word of the paper's text is replaced: "Answer the following question:" stays and the instruction
# comes with the question, as the DAPO-Math-17k prompts the paper trains on carry theirs.
REPLAY_TEMPLATE = """Prior study has provided some internal reference information relevant to this question, including the key approaches, steps, and reasoning needed for a correct solution; the typical reasoning biases, logical flaws, or pitfalls that appear in incorrect solutions; and various heuristic insights on how to complete this problem more effectively.
{experience}
Now, please fully internalize this information as your own experience, then independently think through the problem in detail and produce a complete answer. Note:
• You must perform full, in-depth reasoning internally and arrive at the final answer while making full use of the information above. Answer the following question: {question}"""

# The headings of the paper's output format, as the policy is asked to write them
# (`melrl.method.parsing.parse_meta_experience` maps them onto the parts of M).
PAPER_SECTION_FAILURE = "Failure Resolution Path & Error Pattern Recognition"
PAPER_SECTION_SUCCESS = "Analysis of Success Factors"
PAPER_SECTION_SUMMARY = "First-Person Reflective Summary"
PAPER_SECTION_HEURISTICS = "Subject Heuristics"
# Labelled fields the paper's format asks for inside a part of M (part -> field names); the parser reports them
# as `details`.
PAPER_FIELDS: dict[str, tuple[str, ...]] = {
    "success_factors": ("Reasoning Pivot", "Robustness Factor", "Reason for Effectiveness"),
    "reflective_summary": ("Review", "Insight", "Action"),
}

# ------------------------------------------------------------------------------------------------------------
# Ours: the compact analysis prompt (`analysis_prompt: compact`). Same requirements and order of solutions as the
# paper's, shorter, with one markdown heading per part of M.
# ------------------------------------------------------------------------------------------------------------

# Section headings of the compact prompt, in order; `parse_meta_experience` looks for them.
SECTION_FAILURE = "Failure Point"
SECTION_PATTERN = "Latent Cognitive Pattern"
SECTION_SUCCESS = "Success Factors"
SECTION_SUMMARY = "Reflective Summary"
SECTION_HEURISTICS = "Heuristics"

COMPACT_ANALYSIS_TEMPLATE = f"""You are a Meta-Cognitive Reasoning Analyst specializing in self-reflection, error root-cause analysis, and the extraction of generalizable heuristics. You are given two solution trajectories for the same problem. The labels Correct and Incorrect apply to the final answer; the reasoning itself may contain twists and turns. Conduct a deep comparative autopsy of the two thinking processes: find the structural differences in cognition that led to success or failure, and turn them into abstract principles for future use.

Core analysis requirements:
1. Correct trajectory (resilience and robustness): if it corrected itself, what triggered the realization and what insight brought it back on track? If it was flawless from the start, what definition, representation or step-by-step check kept it out of the trap the incorrect one fell into?
2. Incorrect trajectory (vulnerability): find the bifurcation point where a correct start turned into an error, the latent cognitive defect behind it (concept conflation, rigid mindset, overlooked edge case, intuitive bias), and the knowledge point or constraint that was violated.
3. Comparative synthesis: why did the successful trajectory avoid the trap? What structural insight did it have that the other missed?
4. Strict generalization: do NOT mention the specific numbers, variables or exact answer of this problem in the Reflective Summary or the Heuristics. Write heuristics as conditional rules ("If ..., then ...", "When dealing with ..., I should ...").

Output format (use exactly these headings):
## {SECTION_FAILURE}
The exact step where the incorrect reasoning diverged, and how the drift happened.
## {SECTION_PATTERN}
The deep-seated reasoning defect (not a surface-level calculation slip).
## {SECTION_SUCCESS}
What made the correct reasoning work, and why.
## {SECTION_SUMMARY}
A first-person reflection ("I ..."): the difference between the two thinking processes, the critical knowledge point or habit, and how I will change my approach.
## {SECTION_HEURISTICS}
- [Pattern name]: If [abstract condition], then [abstract action].
- [Pattern name]: When dealing with [concept type], I must verify [constraint].

Here are the question and the two solutions.
<question>
{{question}}
</question>
Solution 1:
<answer>
{{error_ans}}
</answer>
<judge>Incorrect</judge>
Solution 2:
<answer>
{{correct_ans}}
</answer>
<judge>Correct</judge>"""

# `analysis_prompt` setting -> template. "paper" is the default.
ANALYSIS_TEMPLATES: dict[str, str] = {"paper": PAPER_ANALYSIS_TEMPLATE, "compact": COMPACT_ANALYSIS_TEMPLATE}

TRUNCATION_MARKER = "\n[... middle of the solution omitted ...]\n"


def _check_analysis_prompt(analysis_prompt: str) -> None:
    if analysis_prompt not in ANALYSIS_TEMPLATES:
        raise ValueError(f"unknown analysis prompt {analysis_prompt!r}; choose one of {sorted(ANALYSIS_TEMPLATES)}")


def output_format(analysis_prompt: str = "paper") -> str:
    """The analysis prompt's output-format block: from its "Output Format" line to the line before the solutions
    ("Here are ..."): the headings, their descriptions and example lines that an analysis should follow."""
    _check_analysis_prompt(analysis_prompt)
    fmt = re.split(r"output format", ANALYSIS_TEMPLATES[analysis_prompt], maxsplit=1, flags=re.IGNORECASE)[-1]
    return fmt[: fmt.rfind("\n\nHere ")]


def solve_text(problem: str, template: str = "qwen-boxed") -> str:
    """The user message that asks the model to solve `problem` with the named template."""
    if template not in SOLVE_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; choose one of {sorted(SOLVE_TEMPLATES)}")
    return SOLVE_TEMPLATES[template].format(problem=problem)


def analysis_text(problem: str, incorrect: str, correct: str, analysis_prompt: str = "paper") -> str:
    """The user message that asks the policy to write a meta-experience for one contrastive pair.

    `analysis_prompt` names the template: "paper" (Appendix C's Meta-Experience Prompt, verbatim) or "compact"
    (ours). The incorrect solution is shown first (Solution 1), the correct one second, as in the paper.
    """
    _check_analysis_prompt(analysis_prompt)
    return ANALYSIS_TEMPLATES[analysis_prompt].format(question=problem, error_ans=incorrect, correct_ans=correct)


def replay_text(problem: str, experience: str, template: str = "qwen-boxed") -> str:
    """The user message that re-solves `problem` with the meta-experience `experience` in context: the paper's
    Empirical Validation Prompt, its question being our solve prompt (`solve_text(problem, template)`)."""
    return REPLAY_TEMPLATE.format(experience=experience.strip(), question=solve_text(problem, template))


def render(tokenizer, user_text: str) -> str:
    """Apply the tokenizer's chat template (with the generation prompt) when it has one; else the text itself."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
    return user_text


def truncate_middle(token_ids: list[int], budget: int, marker_ids: list[int]) -> list[int]:
    """Keep the head and tail of `token_ids` within `budget` tokens, joined by `marker_ids`.

    The head shows how a solution set out and the tail where it ended up (its answer); the bifurcation point
    the analysis looks for is more often near those than in the middle of a long trajectory.
    """
    if budget < 0:
        raise ValueError("budget must be >= 0")
    if len(token_ids) <= budget:
        return list(token_ids)
    keep = budget - len(marker_ids)
    if keep <= 0:
        return list(token_ids[-budget:]) if budget else []
    head = keep // 2
    tail = keep - head
    return list(token_ids[:head]) + list(marker_ids) + (list(token_ids[-tail:]) if tail else [])
