"""One meta-experience from pair to verdict: prompt budget, parsing verdicts, leak check, the filter in front of
replay, replay keep/drop."""

import pytest

from melrl.method.pairs import Pair
from melrl.method.meta_phase import (
    EXPERIENCE_FILTERS, MetaExperienceJob, build_jobs, is_replay_candidate, judge_analysis,
)
from melrl.method.prompts import (
    SECTION_FAILURE, SECTION_HEURISTICS, SECTION_PATTERN, SECTION_SUCCESS, SECTION_SUMMARY, TRUNCATION_MARKER,
    analysis_text, render,
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


def judged(analysis, leak_check=True, **kw):
    job = make_job(analysis, **kw)
    judge_analysis(job, leak_check=leak_check)
    return job


def candidate_under(job):
    return {f: is_replay_candidate(job, f) for f in EXPERIENCE_FILTERS}


def test_default_filter_is_the_papers_replay():
    job = judged("I think the first one was wrong because it was wrong.")
    assert is_replay_candidate(job) is is_replay_candidate(job, "replay") is True


def test_well_formed_analysis_is_parsed_into_its_parts_and_replayed_under_either_filter():
    job = judged(WELL_FORMED)
    assert job.parsed and not job.leaks and job.parse_error is None
    assert "second step" in job.parts["failure_point"]
    assert job.parts["heuristics"] == [
        "[Name before adding]: If a word problem gives several quantities, then label each before combining them."
    ]
    assert candidate_under(job) == {"replay": True, "format": True}


def test_truncated_analysis_is_parsed_and_replayed_by_the_paper_filter_but_not_by_the_format_gate():
    job = judged(WELL_FORMED, truncated=True)
    assert job.parsed and job.parts["heuristics"] and job.parse_error is None  # recorded all the same
    assert candidate_under(job) == {"replay": True, "format": False}
    cut = judged(WELL_FORMED[:60], truncated=True)
    assert not cut.parsed and cut.parse_error.startswith("truncated: the analysis hit its token budget; missing")
    assert candidate_under(cut) == {"replay": True, "format": False}


def test_malformed_analysis_is_counted_and_left_to_replay_under_the_paper_filter():
    job = judged("I think the first one was wrong because it was wrong.")
    assert not job.parsed and job.parts is None and "missing sections" in job.parse_error
    assert candidate_under(job) == {"replay": True, "format": False}


def test_empty_analysis_is_never_replayed():
    for text in ("", "  \n"):
        job = judged(text, truncated=True)
        assert candidate_under(job) == {"replay": False, "format": False}


def test_heuristics_that_state_the_answer_leak_under_either_filter():
    leaky = WELL_FORMED.replace("label each before combining them.", "the answer is 12.")
    job = judged(leaky)
    assert job.parsed and job.leaks == ["12"]
    assert candidate_under(job) == {"replay": False, "format": False}
    unchecked = judged(leaky, leak_check=False)
    assert unchecked.leaks == [] and candidate_under(unchecked) == {"replay": True, "format": True}
    # a distinctive number of the problem leaks wherever it occurs in the heuristics or the summary
    job = judged(WELL_FORMED.replace("I rushed", "With 17 apples I rushed"),
                 problem="Tom has 17 apples and buys 7 more. How many apples?", gold="24")
    assert job.leaks == ["17"] and candidate_under(job) == {"replay": False, "format": False}


def test_small_gold_in_ordinary_notation_does_not_leak():
    # gold 1 and "Step 1", gold 2 and "x^2" (issue 28), in the heuristics of a parsed analysis
    text = WELL_FORMED.replace("label each before combining them.",
                               "Step 1: compute x^2 carefully and label each quantity.")
    for gold in ("1", "2"):
        job = judged(text, gold=gold, problem="What is 1 + 1?")
        assert job.parsed and job.leaks == [] and candidate_under(job) == {"replay": True, "format": True}


def test_numbers_in_the_diagnosis_are_allowed_and_the_answer_in_an_unstructured_analysis_is_not():
    # the failure point may name the problem's numbers and the answer: the paper forbids them in the heuristics
    # and the summary only
    diagnosis = WELL_FORMED.replace("added the wrong pair of quantities", "wrote 5 + 7 = 13 instead of 12")
    assert judged(diagnosis, problem="Tom has 15 apples and buys 17 more.", gold="12").leaks == []
    # without those sections the whole text is checked, for the gold answer only
    prose = "Solution 1 added 15 and 17 wrongly. I should add carefully: the answer is 32."
    job = judged(prose, problem="Tom has 15 apples and buys 17 more.", gold="32")
    assert not job.parsed and job.leaks == ["32"] and candidate_under(job) == {"replay": False, "format": False}
    job = judged(prose.replace("the answer is 32", "then check the sum"), problem="Tom has 15 apples and buys 17 more.",
                 gold="32")
    assert job.leaks == [] and candidate_under(job) == {"replay": True, "format": False}


def test_unknown_filter_names_the_choices():
    with pytest.raises(ValueError, match="replay.*format"):
        is_replay_candidate(judged(WELL_FORMED), "parsed")


def test_judging_again_starts_afresh():
    job = judged(WELL_FORMED.replace("label each before combining them.", "the answer is 12."))
    job.analysis = "no sections here"
    judge_analysis(job, leak_check=True)
    assert (job.parsed, job.parts, job.leaks) == (False, None, [])


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
    assert record["replayed"] is bool(verdicts)


@pytest.mark.parametrize("analysis_prompt", ["paper", "compact"])
def test_analysis_prompt_fits_its_budget_by_cutting_solutions_in_the_middle(tokenizer, analysis_prompt):
    long_solution = tokenizer(" ".join(f"step {i} adds one more." for i in range(400)))["input_ids"]
    bare = len(tokenizer(render(tokenizer, analysis_text("What is 5 + 7?", "", "", analysis_prompt)))["input_ids"])
    budget = bare + 400
    jobs = build_jobs(
        [Pair(0, 0, 1)], ["What is 5 + 7?"] * 2, ["12"] * 2, ["p0"] * 2, [long_solution, long_solution],
        tokenizer, budget, analysis_prompt=analysis_prompt,
    )
    (job,) = jobs
    assert budget - 60 <= len(job.analysis_prompt_ids) <= budget
    assert TRUNCATION_MARKER.strip() in job.correct_solution
    assert job.correct_solution.startswith("step 0 adds") and job.correct_solution.endswith("step 399 adds one more.")


@pytest.mark.parametrize("analysis_prompt", [None, "paper", "compact"])
def test_short_solutions_are_shown_whole_in_the_chosen_prompt(tokenizer, analysis_prompt):
    solutions = [tokenizer("5 + 7 = 12")["input_ids"], tokenizer("5 + 7 = 13")["input_ids"]]
    kw = {} if analysis_prompt is None else {"analysis_prompt": analysis_prompt}
    (job,) = build_jobs([Pair(0, 0, 1)], ["What is 5 + 7?"] * 2, ["12"] * 2, ["a", "b"], solutions, tokenizer, 4096,
                        **kw)
    assert (job.correct_solution, job.incorrect_solution) == ("5 + 7 = 12", "5 + 7 = 13")
    prompt = tokenizer.decode(job.analysis_prompt_ids)
    assert prompt.index("5 + 7 = 13") < prompt.index("5 + 7 = 12")  # Incorrect first, Correct second
    assert prompt.index("<judge>Incorrect") < prompt.index("<judge>Correct")
    # the default is the paper's prompt
    assert ("Scenario A (Self-Correction)" in prompt) is (analysis_prompt != "compact")
    assert job.analysis_prompt_ids == tokenizer(render(tokenizer, analysis_text(
        "What is 5 + 7?", "5 + 7 = 13", "5 + 7 = 12", analysis_prompt or "paper")))["input_ids"]


def test_config_defaults_are_the_papers_and_unknown_choices_are_refused(tmp_path):
    from melrl.training.config import MELConfig

    cpu = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[])
    config = MELConfig(**cpu)
    # the paper's prompt and filter; the leak check is ours, so it is off by default
    assert (config.analysis_prompt, config.experience_filter, config.leak_check) == ("paper", "replay", False)
    assert MELConfig(**cpu, analysis_prompt="compact", experience_filter="format").experience_filter == "format"
    with pytest.raises(ValueError, match="analysis_prompt: 'verbatim' is not one of \\['compact', 'paper'\\]"):
        MELConfig(**cpu, analysis_prompt="verbatim")
    with pytest.raises(ValueError, match="experience_filter: 'parsed' is not one of"):
        MELConfig(**cpu, experience_filter="parsed")


def test_a_budget_without_room_for_the_solutions_is_reported(tokenizer, caplog):
    solutions = [tokenizer("5 + 7 = 12")["input_ids"], tokenizer("5 + 7 = 13")["input_ids"]]
    bare = len(tokenizer(render(tokenizer, analysis_text("What is 5 + 7?", "", "", "paper")))["input_ids"])
    with caplog.at_level("WARNING", logger="melrl.method.meta_phase"):
        (job,) = build_jobs([Pair(0, 0, 1)], ["What is 5 + 7?"] * 2, ["12"] * 2, ["a", "b"], solutions, tokenizer,
                            bare)
    assert job.correct_solution == ""
    assert f"analysis_max_prompt_length {bare} leaves 0 tokens per solution" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="melrl.method.meta_phase"):
        build_jobs([Pair(0, 0, 1)], ["What is 5 + 7?"] * 2, ["12"] * 2, ["a", "b"], solutions, tokenizer, bare + 200)
    assert "leaves" not in caplog.text
