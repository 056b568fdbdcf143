"""One meta-experience from pair to verdict: the analysis prompt, parsing, leak check, replay and the log record.

Engine-free: the trainer generates, this module builds prompts and judges what came back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from melrl.verify.answers import extract_answer
from melrl.method.experience import MetaExperienceFormatError, Pair, find_leaks, parse_meta_experience
from melrl.method.prompts import TRUNCATION_MARKER, analysis_text, render, replay_text, truncate_middle

# Tokens kept free in the analysis budget: re-tokenising decoded text can come out a few tokens longer.
_BUDGET_MARGIN = 16


@dataclass
class MetaExperienceJob:
    pair: Pair
    problem_id: str
    problem: str
    gold: str
    correct_solution: str
    incorrect_solution: str
    analysis_prompt_ids: list[int]
    analysis_ids: list[int] = field(default_factory=list)
    analysis: str = ""
    truncated: bool = False
    parsed: bool = False
    parse_error: str | None = None
    parts: dict | None = None
    leaks: list[str] = field(default_factory=list)
    replays: list[str] = field(default_factory=list)
    replay_answers: list[str | None] = field(default_factory=list)
    replay_correct: list[bool] = field(default_factory=list)
    kept: bool = False

    def replay_prompt(self, template: str) -> str:
        return replay_text(self.problem, self.analysis, template)

    def set_replays(self, texts: list[str], verdicts: list[bool], answer_format: str, threshold: float) -> None:
        self.replays = list(texts)
        self.replay_answers = [extract_answer(text, answer_format) for text in texts]
        self.replay_correct = [bool(v) for v in verdicts]
        self.kept = bool(verdicts) and sum(self.replay_correct) / len(self.replay_correct) >= threshold - 1e-9

    def record(self, step: int) -> dict:
        """The `experiences.jsonl` line of this meta-experience."""
        return {
            "step": step,
            "problem_id": self.problem_id,
            "problem": self.problem,
            "gold": self.gold,
            "pair": {"group": self.pair.group, "correct": self.pair.correct, "incorrect": self.pair.incorrect},
            "incorrect_solution": self.incorrect_solution,
            "correct_solution": self.correct_solution,
            "analysis": self.analysis,
            "analysis_tokens": len(self.analysis_ids),
            "truncated": self.truncated,
            "parsed": self.parsed,
            "parse_error": self.parse_error,
            "parts": self.parts,
            "leaked": bool(self.leaks),
            "leaks": self.leaks,
            "replay": self.replays,
            "replay_answer": self.replay_answers,
            "replay_correct": self.replay_correct,
            "kept": self.kept,
        }


def build_jobs(
    pairs: list[Pair],
    problems: list[str],
    golds: list[str],
    ids: list[str],
    completion_ids: list[list[int]],
    tokenizer,
    max_prompt_length: int,
) -> list[MetaExperienceJob]:
    """Analysis prompts for `pairs` (global row indices), each within `max_prompt_length` tokens.

    The two solutions share what the instruction and question leave of the budget equally; a longer solution keeps
    its head and tail around a marker (`prompts.truncate_middle`).
    """
    marker_ids = tokenizer(TRUNCATION_MARKER, add_special_tokens=False)["input_ids"]
    room_by_problem: dict[str, int] = {}
    jobs = []
    for pair in pairs:
        problem = problems[pair.correct]
        if problem not in room_by_problem:
            bare = len(tokenizer(text=render(tokenizer, analysis_text(problem, "", "")))["input_ids"])
            room_by_problem[problem] = max(0, (max_prompt_length - bare - _BUDGET_MARGIN) // 2)
        room = room_by_problem[problem]
        correct = tokenizer.decode(truncate_middle(completion_ids[pair.correct], room, marker_ids),
                                   skip_special_tokens=True)
        incorrect = tokenizer.decode(truncate_middle(completion_ids[pair.incorrect], room, marker_ids),
                                     skip_special_tokens=True)
        prompt = render(tokenizer, analysis_text(problem, incorrect=incorrect, correct=correct))
        jobs.append(
            MetaExperienceJob(
                pair=pair,
                problem_id=ids[pair.correct],
                problem=problem,
                gold=golds[pair.correct],
                correct_solution=correct,
                incorrect_solution=incorrect,
                analysis_prompt_ids=list(tokenizer(text=prompt)["input_ids"]),
            )
        )
    return jobs


def judge_analysis(job: MetaExperienceJob, *, leak_check: bool) -> None:
    """Parse the analysis and check it for leaks; a truncated analysis is rejected unparsed."""
    if job.truncated:
        job.parse_error = "truncated: the analysis hit its token budget"
        return
    try:
        parsed = parse_meta_experience(job.analysis)
    except MetaExperienceFormatError as error:
        job.parse_error = str(error)
        return
    job.parsed = True
    job.parts = parsed.as_dict()
    if leak_check:
        checked = parsed.reflective_summary + "\n" + "\n".join(parsed.heuristics)
        job.leaks = find_leaks(checked, job.gold, job.problem)
