"""One meta-experience from pair to verdict: the analysis prompt, parsing, leak check, replay and the log record.

Engine-free: the trainer generates, this module builds prompts and judges what came back.

Which analyses are replayed (`is_replay_candidate`, setting `experience_filter`):

- `replay` (default, the paper's): every analysis goes to replay, and replay alone decides what is kept (Eq. 6).
  Parsing is an observation (the parts shown in reports, the `parsed` counter), not a gate. A truncated analysis
  (it hit its token budget) is replayed too: the paper is silent on it, and replay tests what the text does, not
  how it ends. Only an empty analysis (no text to validate or internalize) is never replayed.
- `format` (ours): today's gate in front of replay as well: only an analysis that was not truncated and whose
  sections parse is replayed.
- `leak_check` (ours, beyond the paper; off by default) rejects an analysis whose heuristics or reflective summary
  quote the gold answer or the problem's distinctive numbers, under either filter. An analysis without those
  sections is checked whole, for the gold answer only (its diagnosis may name the problem's numbers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from melrl.verify.answers import extract_answer
from melrl.method.leaks import find_leaks
from melrl.method.pairs import Pair
from melrl.method.parsing import MetaExperienceFormatError, leak_scope, parse_meta_experience
from melrl.method.prompts import TRUNCATION_MARKER, analysis_text, render, replay_text, truncate_middle

EXPERIENCE_FILTERS = ("replay", "format")
"""What sends an analysis to replay: `replay` (the paper's: every analysis) or `format` (ours: parsed ones only)."""

# Tokens kept free in the analysis budget: re-tokenising decoded text can come out a few tokens longer.
_BUDGET_MARGIN = 16
_MIN_SOLUTION_ROOM = 16  # tokens per solution below which the analysis prompt cannot show the pair

logger = logging.getLogger(__name__)


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
    analyst: dict | None = None  # who wrote the analysis (`melrl.training.analyst`)

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
            "analyst": self.analyst,
            "truncated": self.truncated,
            "parsed": self.parsed,
            "parse_error": self.parse_error,
            "parts": self.parts,
            "leaked": bool(self.leaks),
            "leaks": self.leaks,
            "replayed": bool(self.replays),
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
    *,
    analysis_prompt: str = "paper",
) -> list[MetaExperienceJob]:
    """Analysis prompts for `pairs` (global row indices), each within `max_prompt_length` tokens, from the template
    `analysis_prompt` names ("paper": Appendix C verbatim; "compact": ours; see `prompts.ANALYSIS_TEMPLATES`).

    The two solutions share what the instruction and question leave of the budget equally; a longer solution keeps
    its head and tail around a marker (`prompts.truncate_middle`).
    """
    marker_ids = tokenizer(TRUNCATION_MARKER, add_special_tokens=False)["input_ids"]
    room_by_problem: dict[str, int] = {}
    jobs = []
    for pair in pairs:
        problem = problems[pair.correct]
        if problem not in room_by_problem:
            bare = len(tokenizer(text=render(tokenizer, analysis_text(problem, "", "", analysis_prompt)))["input_ids"])
            room_by_problem[problem] = max(0, (max_prompt_length - bare - _BUDGET_MARGIN) // 2)
            if room_by_problem[problem] < _MIN_SOLUTION_ROOM:
                logger.warning(
                    "analysis_max_prompt_length %d leaves %d tokens per solution: the %s analysis prompt takes %d "
                    "tokens with this problem before the solutions; the analysis sees the solutions cut to almost "
                    "nothing. Raise analysis_max_prompt_length to at least %d.", max_prompt_length,
                    room_by_problem[problem], analysis_prompt, bare, bare + _BUDGET_MARGIN + 2 * 256)
        room = room_by_problem[problem]
        correct = tokenizer.decode(truncate_middle(completion_ids[pair.correct], room, marker_ids),
                                   skip_special_tokens=True)
        incorrect = tokenizer.decode(truncate_middle(completion_ids[pair.incorrect], room, marker_ids),
                                     skip_special_tokens=True)
        prompt = render(tokenizer, analysis_text(problem, incorrect, correct, analysis_prompt))
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
    """Record what can be seen of an analysis, whatever the filter: its parts (`parsed`, `parts`, or
    `parse_error`; a truncated analysis is parsed too) and, with `leak_check`, its leaks. Whether it goes to replay
    is `is_replay_candidate`'s decision."""
    job.parsed, job.parts, job.parse_error, job.leaks = False, None, None, []
    try:
        parsed = parse_meta_experience(job.analysis)
    except MetaExperienceFormatError as error:
        job.parse_error = ("truncated: the analysis hit its token budget; " if job.truncated else "") + str(error)
    else:
        job.parsed = True
        job.parts = parsed.as_dict()
    if leak_check:
        scope = leak_scope(job.analysis)
        # Without the sections the paper's constraint names, the whole text is checked for the answer only.
        job.leaks = (find_leaks(job.analysis, job.gold, "") if scope is None
                     else find_leaks(scope, job.gold, job.problem))


def is_replay_candidate(job: MetaExperienceJob, experience_filter: str = "replay") -> bool:
    """Whether the analysis goes to replay (after `judge_analysis`). Never when empty or when it leaked (the leak
    check, ours, applies under either filter). Under `replay` (the paper's) every other analysis is replayed,
    truncated or unparsed; under `format` (ours) only a parsed analysis that was not truncated."""
    if experience_filter not in EXPERIENCE_FILTERS:
        raise ValueError(f"experience_filter: {experience_filter!r} is not one of {EXPERIENCE_FILTERS}")
    if not job.analysis.strip() or job.leaks:
        return False
    return experience_filter == "replay" or (job.parsed and not job.truncated)
