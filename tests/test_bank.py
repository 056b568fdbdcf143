"""The experience bank at test time: loading, retrieval, exclusion, the prompt, and its place in `evaluate`."""

import hashlib
import json
from pathlib import Path

import pytest

from melrl.evaluation.backends import TransformersBackend
from melrl.evaluation.bank import (
    ExperienceBank,
    ExperienceBankError,
    bank_prompt_text,
    join_experiences,
    normalize_problem,
)
from melrl.jsonl import read_jsonl
from melrl.method.prompts import replay_text, solve_text

MODULAR = "When a remainder of a large power is asked, I reduce the base modulo the divisor and look for a cycle."
TRIANGLE = "When a triangle's sides are given, I check the triangle inequality and use Heron's formula for area."
COUNTING = "When counting arrangements, I separate ordered from unordered selections before multiplying."
ARITH = "There are 3 toys in a box. Ben puts in 7 more. How many toys are in the box?"  # arith test problem 0


def _row(problem, heuristic, *, kept=True, step=1, problem_id="p"):
    analysis = f"## Failure Point\nThe incorrect solution drifted.\n## Heuristics\n- {heuristic}"
    return {"step": step, "problem_id": problem_id, "problem": problem, "gold": "1", "analysis": analysis,
            "parsed": True, "parts": {"heuristics": [heuristic]}, "kept": kept}


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def bank_file(tmp_path):
    return _write(tmp_path / "experiences.jsonl", [
        _row("Find the remainder when 3^200 is divided by 7.", MODULAR, problem_id="mod"),  # line 1
        _row("A triangle has sides 13, 14 and 15. Find its area.", TRIANGLE, problem_id="tri"),  # line 2
        _row("What is the remainder when 5^99 is divided by 11?", "a remainder heuristic", kept=False),  # line 3
        _row("In how many ways can 5 books be arranged on a shelf?", COUNTING, problem_id="count"),  # line 4
        _row(ARITH, "When items are added to a box, I add the counts.", step=2, problem_id="toys"),  # line 5
    ])


# ---------------------------------------------------------------------------------------------------------------
# Loading and retrieval (no model)


def test_only_kept_entries_are_loaded_and_the_bank_is_identified(bank_file):
    bank = ExperienceBank(bank_file.parent)  # a run directory: its experiences.jsonl
    assert bank.path == bank_file and (bank.rows, len(bank.entries)) == (5, 4)
    assert [e.id for e in bank.entries] == [1, 2, 4, 5]
    assert bank.sha256 == hashlib.sha256(bank_file.read_bytes()).hexdigest()
    described = bank.describe(3)
    assert (described["kept"], described["retrieve"], described["retriever"]) == (4, 3, "bm25s 0.3.16")
    assert described["retriever_params"]["fields"] == ["problem", "heuristics"]


def test_retrieval_ranks_the_relevant_entries_first(bank_file):
    bank = ExperienceBank(bank_file)
    got = bank.retrieve("What is the remainder when 2^100 is divided by 7?", 2)
    assert [e.id for e in got.entries][0] == 1 and len(got.entries) == 2 and got.excluded == ()
    assert got.scores[0] > got.scores[1] >= 0
    got = bank.retrieve("Find the area of a triangle with sides 5, 12 and 13.", 1)
    assert [e.id for e in got.entries] == [2]
    assert 3 not in {e.id for k in (1, 4) for e in bank.retrieve("remainder of 5^99 divided by 11", k).entries}
    assert len(bank.retrieve("completely unrelated words", 10).entries) == 4  # K above the bank: all of it
    record = got.record()
    assert record["experiences"] == [{"id": 2, "score": round(got.scores[0], 4), "step": 1, "problem_id": "tri"}]


def test_an_entry_of_the_evaluated_problem_itself_is_excluded(bank_file):
    bank = ExperienceBank(bank_file)
    same = "  find the REMAINDER when 3^200 is\ndivided by 7. "
    assert normalize_problem(same) == normalize_problem("Find the remainder when 3^200 is divided by 7.")
    got = bank.retrieve(same, 3)
    assert got.excluded == (1,) and 1 not in [e.id for e in got.entries] and len(got.entries) == 3


def test_the_prompt_is_the_empirical_validation_prompt_with_the_retrieved_analyses(bank_file):
    bank = ExperienceBank(bank_file)
    problem = "What is the remainder when 2^100 is divided by 7?"
    one = bank.retrieve(problem, 1)
    assert bank_prompt_text(problem, one, "qwen-boxed") == replay_text(problem, one.entries[0].analysis)  # replay's
    three = bank.retrieve(problem, 3)
    text = bank_prompt_text(problem, three, "qwen-boxed")
    assert text == replay_text(problem, join_experiences(three.entries))
    assert all(f"Experience {i}:\n{e.analysis}" in text for i, e in enumerate(three.entries, 1))
    assert text.index(MODULAR) < text.index(solve_text(problem))
    only_itself = ExperienceBank(_write(bank_file.parent / "one.jsonl", [_row(problem, MODULAR)]))
    alone = only_itself.retrieve(problem, 3)
    assert alone.entries == () and bank_prompt_text(problem, alone, "qwen-boxed") == solve_text(problem)


def test_unusable_banks_are_clear_errors(tmp_path):
    with pytest.raises(ExperienceBankError, match="not found"):
        ExperienceBank(tmp_path / "nope")
    none_kept = _write(tmp_path / "none.jsonl", [_row("1 + 1?", COUNTING, kept=False)] * 2)
    with pytest.raises(ExperienceBankError, match=r"none\.jsonl: no kept meta-experience among its 2 row"):
        ExperienceBank(none_kept)
    torn = _write(tmp_path / "torn.jsonl", [_row("1 + 1?", COUNTING), '{"step": 1, "probl'])
    with pytest.raises(ExperienceBankError, match=r"torn\.jsonl, line 2: not a JSON line"):
        ExperienceBank(torn)
    other = _write(tmp_path / "samples.jsonl", [{"benchmark": "gsm8k", "id": "0"}])
    with pytest.raises(ExperienceBankError, match=r"samples\.jsonl, line 1: not a meta-experience record"):
        ExperienceBank(other)
    empty = _write(tmp_path / "empty.jsonl", [{**_row("1 + 1?", COUNTING), "analysis": ""}])
    with pytest.raises(ExperienceBankError, match=r"line 1: a kept meta-experience without its 'analysis'"):
        ExperienceBank(empty)


# ---------------------------------------------------------------------------------------------------------------
# In `evaluate`, the store and the CLI (the tiny random model, arith problems: no data files)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from melrl.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    return model.eval(), tokenizer


class RecordingBackend(TransformersBackend):
    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer)
        self.prompts = []

    def generate(self, requests):
        self.prompts += [r.prompt for r in requests]
        return super().generate(requests)


TINY = dict(limit=2, k=1, max_new_tokens=2, progress=False, label="tiny")


def test_evaluate_puts_the_retrieved_entries_in_every_prompt_and_records_them(tiny, bank_file, tmp_path):
    from melrl.evaluation import evaluate

    backend = RecordingBackend(*tiny)
    out = tmp_path / "run"
    results = evaluate(tiny, ["arith"], backend=backend, output_dir=str(out), experiences=bank_file, retrieve=2,
                       **TINY)
    lines = {r["id"]: r for r in read_jsonl(out / "samples.jsonl")}
    assert len(backend.prompts) == 4  # greedy + 1 sample for each of 2 problems, the same prompt for both
    bank = ExperienceBank(bank_file)
    for record in lines.values():
        assert [e["id"] for e in record["experiences"]] == [e.id for e in bank.retrieve(record["problem"], 2).entries]
        assert all(isinstance(e["score"], float) for e in record["experiences"])
        entries = {e.id: e for e in bank.entries}
        prompts = [p for p in backend.prompts if solve_text(record["problem"]) in p]
        assert len(prompts) == 2 and all(entries[e["id"]].analysis in p for e in record["experiences"]
                                         for p in prompts)
        assert all(p.count("Experience ") == 2 and "Prior study has provided" in p for p in prompts)
    # arith's problem 0 is line 5's problem: left out of its retrieval and counted
    assert lines["arith-L1-s0-test-00000"]["excluded_experiences"] == [5]
    assert 5 not in [e["id"] for e in lines["arith-L1-s0-test-00000"]["experiences"]]
    on_disk = json.loads((out / "results.json").read_text())
    bank_config = on_disk["config"]["experiences"]
    assert bank_config["path"] == str(bank_file) and bank_config["kept"] == 4 and bank_config["retrieve"] == 2
    assert bank_config["sha256"] == hashlib.sha256(bank_file.read_bytes()).hexdigest()
    assert bank_config["retriever"] == "bm25s 0.3.16" and bank_config["retriever_params"]["k1"] == 1.5
    assert bank_config["exclusions"] == {"entries": 1, "problems": 1, "ids": ["arith:arith-L1-s0-test-00000"],
                                         "without_experiences": []}
    assert results["config"]["experiences"] == bank_config
    markdown = (out / "results.md").read_text()
    assert "# Evaluation of tiny + bank (K = 2)" in markdown and "Experience bank (in context" in markdown

    # the same directory without the bank, with another K, or with another bank is refused
    with pytest.raises(ValueError, match=r"experience bank: .*experiences\.jsonl \(sha256 \w+, 4 kept, K = 2\) "
                                         r"there, none now"):
        evaluate(tiny, ["arith"], output_dir=str(out), **TINY)
    with pytest.raises(ValueError, match=r"K = 2\) there, .*K = 3\) now"):
        evaluate(tiny, ["arith"], output_dir=str(out), experiences=bank, retrieve=3, **TINY)
    other = _write(tmp_path / "other.jsonl", [_row("1 + 1?", COUNTING)])
    with pytest.raises(ValueError, match=r"there, .*other\.jsonl \(sha256"):
        evaluate(tiny, ["arith"], output_dir=str(out), experiences=other, retrieve=2, **TINY)
    # and a directory without a bank refuses one with
    evaluate(tiny, ["arith"], output_dir=str(tmp_path / "plain"), **dict(TINY, limit=1))
    with pytest.raises(ValueError, match=r"experience bank: none there, .*K = 3\) now"):
        evaluate(tiny, ["arith"], output_dir=str(tmp_path / "plain"), experiences=bank, **dict(TINY, limit=1))


def test_cli_bank_flags_output_dir_errors_and_compare(tiny_model_dir, bank_file, tmp_path, capsys):
    import argparse

    from melrl.cli.eval import add_eval_parser, default_output_dir, run_eval
    from melrl.evaluation import compare

    parser = argparse.ArgumentParser(prog="melrl")
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--model", "m"])
    assert (args.experiences, args.retrieve) == (None, None)
    assert default_output_dir("Qwen/Qwen3-4B-Base", "runs/qwen3_4b_mel") == Path(
        "runs/eval/Qwen_Qwen3-4B-Base+bank-runs_qwen3_4b_mel-k3")
    assert default_output_dir("m", "runs/mel/experiences.jsonl", 5) == Path("runs/eval/m+bank-runs_mel-k5")
    assert default_output_dir("m") == Path("runs/eval/m")

    assert run_eval(parser.parse_args(["eval", "--model", "m", "--retrieve", "2"])) == 2
    assert "--retrieve K needs" in capsys.readouterr().err
    none_kept = _write(tmp_path / "none.jsonl", [_row("1 + 1?", COUNTING, kept=False)])
    # the bank is checked before any model is loaded (there is no model "m")
    assert run_eval(parser.parse_args(["eval", "--model", "m", "--experiences", str(none_kept)])) == 2
    assert f"{none_kept}: no kept meta-experience" in capsys.readouterr().err
    assert run_eval(parser.parse_args(["eval", "--model", tiny_model_dir, "--benchmarks", "arith", "--limit", "1",
                                       "--k", "0", "--max-new-tokens", "2", "--no-progress", "--experiences",
                                       str(bank_file.parent), "--retrieve", "1",
                                       "--output-dir", str(tmp_path / "cli")])) == 0
    assert "+ bank (K = 1) |" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["config"]["experiences"]["retrieve"] == 1

    for name, bank in (("base", None), ("base_bank", {"path": "runs/mel/experiences.jsonl", "retrieve": 3})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"config": {"model": "base", "experiences": bank}, "metrics": {"aime24": {"pass@1": 0.1}}}))
    table = compare([tmp_path / "base", tmp_path / "base_bank"])
    assert f"| {tmp_path / 'base'} | 10.00 |" in table
    assert f"| {tmp_path / 'base_bank'} (+ bank runs/mel/experiences.jsonl, K = 3) | 10.00 |" in table
