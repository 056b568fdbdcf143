"""Run reports on real run directories (2 training steps of the tiny model, MEL and GRPO), the `melrl report` and
`melrl experiences` commands, tensorboard logging, and the page in a real headless browser (Chromium)."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import struct
from pathlib import Path

import pytest

import melrl.training.trainer as trainer_module
from melrl.training.config import MELConfig
from melrl.jsonl import read_jsonl
from melrl.report import build_report, filter_experiences, load_run, verdict
from melrl.report.page import cap
from melrl.cli.report import add_report_parsers, format_table, run_experiences, run_report
from tests.helpers import CHROMIUM, chromium

INJECTION = "<script>alert(1)</script>"
FIGURES = ("reward", "validation", "retention", "counters", "time")


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ real runs


def parity_accuracy(prompts, completions, **kwargs):
    """Mixed groups on a random model: odd-length completions count as correct."""
    return [float(len(c) % 2) for c in completions]


parity_accuracy.__name__ = "accuracy"


_alternate = itertools.cycle([True, False])


def judge(job, *, leak_check):
    """Stand-in for the parser (a random model writes no sections): even incorrect rows parse into full parts,
    every third of those leaks; the analysis carries markup that the page must escape."""
    job.analysis = job.analysis + "\n" + INJECTION
    job.parsed = job.pair.incorrect % 2 == 0
    job.truncated = not job.parsed and next(_alternate)  # the tiny model always hits its budget
    job.parse_error = ("truncated: the analysis hit its token budget" if job.truncated
                       else None if job.parsed else "missing section(s): Heuristics")
    job.parts = {
        "failure_point": "the sum <b>was</b> wrong", "cognitive_pattern": "", "success_factors": "checking",
        "reflective_summary": "I rushed " + INJECTION, "heuristics": ["Recompute a sum before answering.", "x"],
    } if job.parsed else None
    job.leaks = ["7"] if job.parsed and job.pair.correct % 3 == 0 else []


def train(model_dir, output_dir, **overrides):
    from datasets import Dataset

    from melrl.models import load_model_and_tokenizer
    from melrl.training.trainer import MELTrainer

    problems = [f"What is {i} + {i}? <img src=x onerror=alert(2)> & </pre>" for i in range(16)]
    dataset = Dataset.from_dict({"prompt": problems, "problem": problems, "answer": [str(2 * i) for i in range(16)],
                                 "id": [f"p{i}" for i in range(16)]})
    values = dict(
        output_dir=str(output_dir), per_device_train_batch_size=8, num_generations=4, max_completion_length=12,
        analysis_max_new_tokens=12, analysis_max_prompt_length=1024, max_steps=2, use_cpu=True, bf16=False,
        gradient_checkpointing=False, report_to="none", logging_steps=1, save_strategy="no",
        learning_rate=1e-3, seed=0, disable_tqdm=True,
    )
    values.update(overrides)
    model, tokenizer = load_model_and_tokenizer(model_dir)
    MELTrainer(model=model, reward_funcs=[parity_accuracy], args=MELConfig(**values), train_dataset=dataset,
               processing_class=tokenizer).train()


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """A MEL run and a GRPO run (with tensorboard logging when it is installed), 2 steps each, plus evaluation
    output in the forms the evaluation code writes (validation lines in metrics.jsonl, eval/*/results.json)."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "judge_analysis", judge)
        replay_verdicts = itertools.cycle([True, False])
        mp.setattr(trainer_module, "verify_batch", lambda texts, golds, **kw: [next(replay_verdicts) for _ in texts])
        train(tiny_model_dir, root / "mel", experience_filter="format")  # rejections before replay too
        train(tiny_model_dir, root / "grpo", meta_experience=False,
              report_to="tensorboard" if _has_tensorboard() else "none")
    for name, base in (("mel", 0.30), ("grpo", 0.25)):
        with open(root / name / "metrics.jsonl", "a") as f:
            for step in (0, 2):
                f.write(json.dumps({"step": step, "eval/gsm8k/pass@1": base + 0.02 * step,
                                    "eval/math500/pass@1": base / 2, "eval/average/pass@1": base * 0.75}) + "\n")
    (root / "mel" / "eval" / "final").mkdir(parents=True)
    (root / "mel" / "eval" / "final" / "results.json").write_text(json.dumps({
        "config": {"model": "runs/mel", "samples": 8},
        "metrics": {"gsm8k": {"pass@1": 0.41, "avg@8": 0.4, "pass@8": 0.7},
                    "average": {"pass@1": 0.41, "avg@8": 0.4, "pass@8": 0.7}},
    }))
    (root / "grpo" / "results.md").write_text("| benchmark | pass@1 |\n|---|---|\n| gsm8k | 35.0 |\n")
    return root


@pytest.fixture(scope="module")
def report(runs):
    return build_report([runs / "mel", runs / "grpo"], runs / "out" / "report.html")


# ------------------------------------------------------------------------------------------------ the page


def test_the_runs_are_real(runs):
    mel = read_jsonl(runs / "mel" / "experiences.jsonl")
    assert len(mel) == sum(m.get("constructed", 0) for m in read_jsonl(runs / "mel" / "metrics.jsonl")) > 0
    assert {verdict(e) for e in mel} >= {"kept", "rejected-parse"}
    assert read_jsonl(runs / "grpo" / "experiences.jsonl") == []


def test_report_writes_html_and_pngs(report, runs):
    html = report.html_path.read_text()
    assert report.html_path == runs / "out" / "report.html"
    assert report.figures == list(FIGURES)
    for name in FIGURES:
        png = runs / "out" / "report_files" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        img = re.search(rf'<img class="figure-img" id="img-{name}" alt="([^"]+)" src="data:image/png;base64,', html)
        assert img, name
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert re.search(r'id="img-reward" alt="[^"]*mel, grpo', html)  # both runs overlaid
    # one browser entry per meta-experience, each with its problem, solutions, analysis and verdict
    experiences = read_jsonl(runs / "mel" / "experiences.jsonl")
    assert html.count('<details class="experience"') == report.entries == len(experiences)
    for v in ("kept", "rejected-parse"):
        assert html.count(f'data-verdict="{v}"') == sum(verdict(e) == v for e in experiences)
    assert html.count('class="solution incorrect"') + html.count('class="empty solution incorrect"') == len(experiences)
    assert "Recompute a sum before answering." in html and 'class="replays"' in html
    # evaluation tables: from results.json (as %) and from results.md
    assert '<td>gsm8k</td><td>41.0</td>' in html and "<td>35.0</td>" in html
    # self-contained: nothing fetched
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html


def test_untrusted_text_is_escaped(report):
    html = report.html_path.read_text()
    assert html.count("<script") == 1  # the page's own
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt; &amp; &lt;/pre&gt;" in html
    assert "<b>was</b>" not in html


def test_missing_files_become_notes(tmp_path, runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = build_report([empty], tmp_path / "r.html")
    html = result.html_path.read_text()
    assert result.figures == [] and not (tmp_path / "r_files").exists()
    assert "no metrics.jsonl" in html and 'id="fig-reward-missing"' in html
    assert 'id="experiences-missing"' in html and 'id="evaluation-missing"' in html
    # GRPO alone: reward and time, no MEL figures
    grpo = build_report([runs / "grpo"], tmp_path / "g.html")
    assert set(grpo.figures) == {"reward", "validation", "time"}
    assert 'id="fig-retention-missing"' in grpo.html_path.read_text()


def test_torn_and_eval_only_lines(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "reward_mean": 0.5, "pairs": 0, "constructed": 0, "kept": 0}) + "\n"
        + json.dumps({"step": 1, "eval/aime24/pass@1": 0.1}) + "\n"
        + '{"step": 2, "reward_me'  # torn by a crash
    )
    (run / "results.json").write_text("{not json")
    loaded = load_run(run)
    assert [m["step"] for m in loaded.train] == [1]
    assert loaded.validation == {"eval/aime24/pass@1": [(1, 0.1)]}
    assert any("unreadable line" in n for n in loaded.notes) and any("results.json" in n for n in loaded.notes)
    assert not loaded.is_mel and loaded.experiences is None
    assert "validation" in build_report([run], tmp_path / "r.html").figures


def test_filters_and_caps():
    records = [
        {"step": 1, "problem_id": "a", "problem": "Add two", "kept": True, "parsed": True},
        {"step": 1, "problem_id": "b", "problem": "x", "truncated": True},
        {"step": 2, "problem_id": "c", "problem": "y", "parsed": True, "leaked": True, "leaks": ["12"]},
        {"step": 3, "problem_id": "d", "problem": "z", "parsed": True, "replay_correct": [False]},
        {"step": 3, "problem_id": "e", "problem": "w", "parsed": False, "parse_error": "missing"},
    ]
    assert [verdict(r) for r in records] == ["kept", "truncated", "leaked", "replay-failed", "rejected-parse"]
    assert [r["problem_id"] for r in filter_experiences(records, kept=True)] == ["a"]
    assert [r["problem_id"] for r in filter_experiences(records, verdicts={"rejected"}, step_min=2)] == ["c", "d", "e"]
    assert [r["problem_id"] for r in filter_experiences(records, problem="ADD")] == ["a"]
    assert [r["problem_id"] for r in filter_experiences(records, step=1, problem="b")] == ["b"]
    capped = cap("a" * 5000 + "END", 300)
    assert len(capped) < 400 and capped.endswith("END") and "characters omitted" in capped
    table = format_table([{"step": 1, "problem_id": "p\x1b[31m1", "parts": {"heuristics": ["line one\nline two"]},
                           "kept": True}], width=80)
    assert "\x1b" not in table and "line one" in table and "line two" not in table


# ------------------------------------------------------------------------------------------------ commands


def parse(argv):
    parser = argparse.ArgumentParser(prog="melrl")
    add_report_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_report_command(runs, tmp_path, capsys):
    assert run_report(parse(["report", str(runs / "mel"), str(runs / "grpo"), "--output",
                             str(tmp_path / "cmp.html")])) == 0
    assert (tmp_path / "cmp_files" / "reward.png").exists()
    assert "wrote" in capsys.readouterr().out
    single = tmp_path / "single"
    shutil.copytree(runs / "grpo", single)
    assert run_report(parse(["report", str(single)])) == 0
    assert (single / "report.html").exists()  # default: inside the run directory
    assert run_report(parse(["report", str(tmp_path / "nope")])) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_experiences_command(runs, tmp_path, capsys):
    bank = read_jsonl(runs / "mel" / "experiences.jsonl")
    assert run_experiences(parse(["experiences", str(runs / "mel")])) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["step", "problem", "verdict"]
    assert len(out.splitlines()) == len(bank) + 2 and "Recompute a sum" in out
    export = tmp_path / "kept.jsonl"
    assert run_experiences(parse(["experiences", str(runs / "mel"), "--kept", "--export", str(export)])) == 0
    assert read_jsonl(export) == [e for e in bank if e["kept"]] != []
    step2 = tmp_path / "s2.jsonl"
    assert run_experiences(parse(["experiences", str(runs / "mel"), "--step", "2", "-q", "--export", str(step2)])) == 0
    assert read_jsonl(step2) == [e for e in bank if e["step"] == 2]
    assert run_experiences(parse(["experiences", str(tmp_path)])) == 2  # no bank


# ------------------------------------------------------------------------------------------------ logging


@pytest.mark.skipif(not _has_tensorboard(), reason="tensorboard is not installed (pip install tensorboard)")
def test_report_to_tensorboard_writes_events(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((runs / "grpo" / "runs").glob("*/events.out.tfevents.*"))
    assert events, "report_to=tensorboard wrote no event file under output_dir/runs/"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert "train/reward" in tags and "train/loss" in tags
    assert [e.step for e in accumulator.Scalars("train/reward")] == [1, 2]


# ------------------------------------------------------------------------------------------------ browser


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install -y chromium)")
def test_page_in_headless_chromium(report, runs, tmp_path):
    bank = read_jsonl(runs / "mel" / "experiences.jsonl")
    kept = sum(e["kept"] for e in bank)
    url = report.html_path.resolve().as_uri()

    dom = chromium(url, tmp_path / "profile", "--dump-dom").stdout
    assert 'data-js="ready"' in dom  # the script ran
    for name in FIGURES:  # every figure decoded by the browser
        assert re.search(rf'<img [^>]*id="img-{name}"[^>]*data-loaded="\d+"', dom), name
    entries = re.findall(r'<details class="experience"[^>]*>', dom)
    assert len(entries) == len(bank) and not any(" hidden" in e for e in entries)
    assert f"{len(bank)} of {len(bank)} entries shown" in dom
    assert "<script>alert" not in dom

    dom = chromium(url + "#verdict=kept", tmp_path / "profile", "--dump-dom").stdout  # filter from the address
    entries = re.findall(r'<details class="experience"[^>]*>', dom)
    visible = [e for e in entries if " hidden" not in e]
    assert len(visible) == kept and all('data-verdict="kept"' in e for e in visible)
    assert f"{kept} of {len(bank)} entries shown" in dom
    dom = chromium(url + "#step=2&verdict=rejected", tmp_path / "profile", "--dump-dom").stdout
    visible = [e for e in re.findall(r'<details class="experience"[^>]*>', dom) if " hidden" not in e]
    assert len(visible) == sum(e["step"] == 2 and not e["kept"] for e in bank)
    assert all('data-step="2"' in e and 'data-verdict="kept"' not in e for e in visible)

    shot = tmp_path / "shot.png"
    chromium(url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 2000) and len(data) > 50_000


def test_odd_records_and_the_entry_cap(tmp_path):
    run = tmp_path / "odd"
    run.mkdir()
    records = [
        {"step": 1, "problem_id": 7, "problem": None, "parts": "not a dict", "replay": "one text", "kept": False},
        {"step": "x", "parts": {"heuristics": "a single string", "failure_point": 3}, "parsed": True,
         "replay_correct": [True, False], "replay": ["a"], "replay_answer": None, "leaks": "12"},
        {},
    ] + [{"step": 2, "problem_id": f"q{i}", "problem": "p" * 10_000, "kept": True} for i in range(20)]
    (run / "experiences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = build_report([run], tmp_path / "odd.html", max_experiences=10, max_chars=500)
    html = result.html_path.read_text()
    assert result.entries == 8  # one in every 3 of 23
    assert "8 of 23 meta-experiences shown" in html and "characters omitted" in html
    assert len(html) < 200_000


@pytest.mark.parametrize("command", ["report", "experiences"])
def test_subcommands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse([command, "--help"])
    assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out.lower()


def test_run_summary_prints_a_kept_meta_experience_whole(tmp_path):
    from melrl.report.summary import run_summary

    step = {"step": 1, "reward_mean": 0.5, "mixed_group_fraction": 0.5, "pairs": 2, "constructed": 2, "parsed": 0,
            "leaked": 0, "kept": 1, "retention_ratio": 0.5, "nll": 1.25}
    long_text = "Heuristic: " + "check each carry before adding the next column. " * 60 + "THE END"
    base = {"step": 1, "problem_id": "p1", "problem": "What is 7 + 8?", "gold": "15", "parsed": False,
            "parse_error": "no sections", "replayed": True}
    experiences = [{**base, "analysis": "x" * 4000 + "CUT HERE", "kept": False, "replay_answer": ["14"],
                    "replay_correct": [False]},
                   {**base, "analysis": long_text, "kept": True, "replay_answer": ["15"], "replay_correct": [True]}]
    (tmp_path / "metrics.jsonl").write_text(json.dumps(step) + "\n")
    (tmp_path / "experiences.jsonl").write_text("".join(json.dumps(e) + "\n" for e in experiences))
    summary = run_summary(tmp_path)
    assert "kept" in summary and "THE END" in summary and "CUT HERE" not in summary
    assert "15 (correct); gold 15" in summary

    experiences[1]["kept"] = False  # nothing kept: the first one is shown, cut
    (tmp_path / "experiences.jsonl").write_text("".join(json.dumps(e) + "\n" for e in experiences))
    summary = run_summary(tmp_path)
    assert "CUT HERE" not in summary and "more characters]" in summary and "14 (wrong)" in summary
