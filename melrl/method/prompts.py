"""Prompt templates: solving (`qwen-boxed`, `dapo`), meta-experience analysis and replay validation.

Every prompt is built as one user message and rendered through the tokenizer's chat template when it has one,
as plain text otherwise (`render`). Rollouts, analysis and replay therefore share one code path.
"""

from __future__ import annotations

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

# Section headings the analysis must use, in order; `melrl.method.experience.parse_meta_experience` looks for them.
SECTION_FAILURE = "Failure Point"
SECTION_PATTERN = "Latent Cognitive Pattern"
SECTION_SUCCESS = "Success Factors"
SECTION_SUMMARY = "Reflective Summary"
SECTION_HEURISTICS = "Heuristics"

# Follows the paper's Meta-Experience Prompt (Appendix C): same requirements, same order of solutions
# (Incorrect first, Correct second), with the output headings spelled out so that the parts can be parsed.
ANALYSIS_TEMPLATE = f"""You are a Meta-Cognitive Reasoning Analyst specializing in self-reflection, error root-cause analysis, and the extraction of generalizable heuristics. You are given two solution trajectories for the same problem. The labels Correct and Incorrect apply to the final answer; the reasoning itself may contain twists and turns. Conduct a deep comparative autopsy of the two thinking processes: find the structural differences in cognition that led to success or failure, and turn them into abstract principles for future use.

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
{{incorrect}}
</answer>
<judge>Incorrect</judge>
Solution 2:
<answer>
{{correct}}
</answer>
<judge>Correct</judge>"""

# Follows the paper's Empirical Validation Prompt (Appendix C); the solve instruction follows the question so
# that the replay answer is extracted exactly as a rollout's.
REPLAY_TEMPLATE = """Prior study has provided some internal reference information relevant to this question, including the key approaches, steps, and reasoning needed for a correct solution; the typical reasoning biases, logical flaws, or pitfalls that appear in incorrect solutions; and various heuristic insights on how to complete this problem more effectively.
<experience>
{experience}
</experience>
Now, please fully internalize this information as your own experience, then independently think through the problem in detail and produce a complete answer. Note: do not mention or quote the reference information in your answer.

{solve_prompt}"""

TRUNCATION_MARKER = "\n[... middle of the solution omitted ...]\n"


def solve_text(problem: str, template: str = "qwen-boxed") -> str:
    """The user message that asks the model to solve `problem` with the named template."""
    if template not in SOLVE_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; choose one of {sorted(SOLVE_TEMPLATES)}")
    return SOLVE_TEMPLATES[template].format(problem=problem)


def analysis_text(problem: str, incorrect: str, correct: str) -> str:
    """The user message that asks the policy to write a meta-experience for one contrastive pair."""
    return ANALYSIS_TEMPLATE.format(question=problem, incorrect=incorrect, correct=correct)


def replay_text(problem: str, experience: str, template: str = "qwen-boxed") -> str:
    """The user message that re-solves `problem` with the meta-experience `experience` in context."""
    return REPLAY_TEMPLATE.format(experience=experience.strip(), solve_prompt=solve_text(problem, template))


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
