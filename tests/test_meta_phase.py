"""One meta-experience from pair to verdict: prompt budget, parsing verdicts, leak check, replay keep/drop."""

import pytest

from melrl.method.experience import Pair
from melrl.method.meta_phase import MetaExperienceJob, build_jobs, judge_analysis
from melrl.method.prompts import (
    SECTION_FAILURE, SECTION_HEURISTICS, SECTION_PATTERN, SECTION_SUCCESS, SECTION_SUMMARY, TRUNCATION_MARKER,
)

WELL_FORMED = f"""## {SECTION_FAILURE}
The incorrect solution added the wrong pair of quantities in its second step.
## {SECTION_PATTERN}
It rushed to combine numbers without naming what each one counts.
## {SECTION_SUCCESS}
The correct solution named every quantity before combining them.
## {SECTION_SUMMARY}
I rushed to combine the numbers; I will name each quantity first.
## {SECTION_HEURISTICS}
- [Name before adding]: If a word problem gives several quantities, then label each before combining them.
"""


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def make_job(analysis, gold="12", problem="Tom has 5 apples and buys 7 more. How many apples?", truncated=False):
    job = MetaExperienceJob(
        pair=Pair(0, 0, 1), problem_id="p", problem=problem, gold=gold, correct_solution="5 + 7 = 12",
        incorrect_solution="5 + 7 = 13", analysis_prompt_ids=[1, 2, 3],
    )
    job.analysis, job.truncated = analysis, truncated
    return job


def test_well_formed_analysis_is_parsed_into_its_parts():
    job = make_job(WELL_FORMED)
    judge_analysis(job, leak_check=True)
    assert job.parsed and not job.leaks
    assert "second step" in job.parts["failure_point"]
    assert job.parts["heuristics"] == [
        "[Name before adding]: If a word problem gives several quantities, then label each before combining them."
    ]


def test_truncated_analysis_is_rejected_even_when_it_would_parse():
    job = make_job(WELL_FORMED, truncated=True)
    judge_analysis(job, leak_check=True)
    assert not job.parsed and "truncated" in job.parse_error


def test_malformed_analysis_is_counted_not_used():
    job = make_job("I think the first one was wrong because it was wrong.")
    judge_analysis(job, leak_check=True)
    assert not job.parsed and job.parse_error


def test_heuristics_that_state_the_answer_leak():
    leaky = WELL_FORMED.replace("label each before combining them.", "the total is 12.")
    job = make_job(leaky)
    judge_analysis(job, leak_check=True)
    assert job.parsed and job.leaks == ["12"]
    unchecked = make_job(leaky)
    judge_analysis(unchecked, leak_check=False)
    assert unchecked.leaks == []


@pytest.mark.parametrize(
    "verdicts, threshold, kept",
    [([True], 1.0, True), ([False], 1.0, False), ([True, False], 1.0, False), ([True, False], 0.5, True),
     ([], 1.0, False)],
)
def test_replay_keeps_only_validated_meta_experiences(verdicts, threshold, kept):
    job = make_job(WELL_FORMED)
    texts = ["so 12" if v else "so 13" for v in verdicts]
    job.set_replays(texts, verdicts, "last_number", threshold)
    assert job.kept is kept
    assert job.replay_answers == ["12" if v else "13" for v in verdicts]
    record = job.record(step=3)
    assert record["kept"] is kept and record["step"] == 3 and record["replay_correct"] == verdicts


def test_analysis_prompt_fits_its_budget_by_cutting_solutions_in_the_middle(tokenizer):
    long_solution = tokenizer(" ".join(f"step {i} adds one more." for i in range(400)))["input_ids"]
    budget = 900
    jobs = build_jobs(
        [Pair(0, 0, 1)], ["What is 5 + 7?"] * 2, ["12"] * 2, ["p0"] * 2, [long_solution, long_solution],
        tokenizer, budget,
    )
    (job,) = jobs
    assert len(job.analysis_prompt_ids) <= budget
    assert TRUNCATION_MARKER.strip() in job.correct_solution
    assert job.correct_solution.startswith("step 0 adds") and job.correct_solution.endswith("step 399 adds one more.")


def test_short_solutions_are_shown_whole(tokenizer):
    solutions = [tokenizer("5 + 7 = 12")["input_ids"], tokenizer("5 + 7 = 13")["input_ids"]]
    (job,) = build_jobs([Pair(0, 0, 1)], ["What is 5 + 7?"] * 2, ["12"] * 2, ["a", "b"], solutions, tokenizer, 4096)
    assert (job.correct_solution, job.incorrect_solution) == ("5 + 7 = 12", "5 + 7 = 13")
    prompt = tokenizer.decode(job.analysis_prompt_ids)
    assert prompt.index("5 + 7 = 13") < prompt.index("5 + 7 = 12")  # Incorrect first, Correct second
    assert prompt.index("Incorrect") < prompt.index("<judge>Correct")
