"""The replay of recorded analyses under prompt-lookup speculation (`benchmarks/prompt_lookup.py`)."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def lookup():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # for its `results_file` import
        spec = importlib.util.spec_from_file_location("melrl_prompt_lookup", BENCHMARKS / "prompt_lookup.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def test_proposal_follows_the_most_recent_occurrence_of_the_longest_tail(lookup):
    assert lookup.proposal([1, 2, 3, 9, 1, 2], ngram=3, k=2) == [3, 9]  # [9, 1, 2] never recurs, [1, 2] does
    assert lookup.proposal([5, 7, 5, 8, 5], ngram=1, k=1) == [8]
    assert lookup.proposal([1, 2, 3], ngram=3, k=4) == []


def test_decode_steps_keep_matching_proposals_and_one_sampled_token(lookup):
    prompt = [1, 2, 3, 4]
    assert lookup.decode_steps(prompt, [1, 2, 3, 4], ngram=3, k=10) == 2  # 1, then 2 3 4 proposed from the prompt
    assert lookup.decode_steps(prompt, [1, 2, 3, 4], ngram=3, k=1) == 3  # 1, then 2 (+3), then 4
    assert lookup.decode_steps(prompt, [7, 8, 9], ngram=3, k=10) == 3  # nothing to look up
    assert lookup.decode_steps(prompt, [1, 9], ngram=3, k=10) == 2  # a proposal the model does not sample
