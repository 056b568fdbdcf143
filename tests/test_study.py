"""The small-scale study script: aggregation by hand, and a whole (tiny) study that resumes without redoing work."""

import importlib.util
import json
from pathlib import Path

import pytest

STUDY_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("melrl_study", STUDY_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mean_std_is_the_sample_standard_deviation(study):
    summary = study.mean_std([0.25, 0.5, 0.75])
    assert summary["mean"] == pytest.approx(0.5)
    assert summary["std"] == pytest.approx(0.25)  # sqrt(((-.25)^2 + 0 + .25^2) / 2)
    assert study.mean_std([0.4])["std"] == 0.0


def test_paired_difference_has_a_t_interval(study):
    difference = study.paired_difference({0: 0.6, 1: 0.8, 2: 0.5, 3: 0.9}, {0: 0.5, 1: 0.5, 2: 0.3, 4: 0.1})
    # pairs on seeds 0, 1, 2: differences 0.1, 0.3, 0.2, mean 0.2, sample sd 0.1, t(2) = 4.303
    assert difference["seeds"] == [0, 1, 2] and difference["n"] == 3
    assert difference["mean"] == pytest.approx(0.2)
    half = 4.303 * 0.1 / 3 ** 0.5
    assert difference["ci95"] == pytest.approx([0.2 - half, 0.2 + half])
    assert study.paired_difference({0: 0.5}, {0: 0.1}) is None


def test_results_table_has_arms_and_differences(study):
    def record(arm, seed, p1):
        return {"arm": arm, "seed": seed, "metrics": {"pass@1": p1, "avg@4": p1 / 2}}

    records = [record("untrained", None, 0.3), record("GRPO", 0, 0.4), record("GRPO", 1, 0.6),
               record("MEL", 0, 0.5), record("MEL", 1, 0.9), record("MEL + own bank", 0, 0.7),
               {"arm": "MEL + own bank", "seed": 1, "metrics": None}]  # seed 1 kept nothing: no bank
    arms, differences = study.summarise(records, [0, 1], ["pass@1", "avg@4"])
    assert list(arms) == ["untrained", "GRPO", "MEL", "MEL + own bank"]
    assert arms["GRPO"]["pass@1"]["mean"] == pytest.approx(0.5)
    assert differences["MEL - GRPO"]["pass@1"]["mean"] == pytest.approx(0.2)  # (0.1 + 0.3) / 2
    assert differences["MEL + own bank - MEL"]["pass@1"] is None  # one pair only
    results = {"seeds": [0, 1], "metrics": ["pass@1", "avg@4"], "arms": arms, "differences": differences,
               "settings": {"eval_limit": 10, "steps": 3, "k": 4, "temperature": 0.7, "max_new_tokens": 48,
                            "bank_k": 3}}
    table = study.markdown(results)
    assert "| untrained | 1 | 30.0 | 15.0 |" in table
    assert "| GRPO | 2 | 50.0 ± 14.1 | 25.0 ± 7.1 |" in table
    assert "| MEL - GRPO | 2 | +20.0 [" in table
    assert "| MEL + own bank - MEL | 0 | n/a | n/a |" in table
    assert "10 held-out" in table and "seeds 0, 1" in table


def test_a_tiny_study_writes_its_results_and_resumes_without_retraining(study, tiny_model_dir, tmp_path, capsys):
    argv = ["--model", tiny_model_dir, "--seeds", "0", "--steps", "1", "--eval-limit", "2", "--k", "2",
            "--max-new-tokens", "8", "--work", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]
    assert study.main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"GRPO", "MEL", "untrained"} <= set(results["arms"])
    assert set(results["arms"]["untrained"]) == {"pass@1", "avg@2", "pass@2"}
    runs = [r for r in results["records"] if r["arm"] in ("GRPO", "MEL")]
    assert sorted(r["method"] for r in runs) == ["GRPO", "MEL"] and all(r["seed"] == 0 for r in runs)
    for run in runs:
        assert run["train"]["steps"] == 1 and run["kept"] == run["train"]["kept"]
    banks = [r for r in results["records"] if "bank" in r["arm"]]
    assert {r["arm"] for r in banks} == {"untrained + MEL bank", "MEL + own bank"}
    assert all((r["metrics"] is None) == (r["bank_size"] == 0) for r in banks)
    assert "| MEL | 1 |" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "report.html").stat().st_size > 0

    metrics_file = tmp_path / "runs" / "mel-seed0" / "metrics.jsonl"
    before = metrics_file.stat().st_mtime_ns
    capsys.readouterr()
    assert study.main(argv) == 0
    assert "MEL seed 0: evaluation found" in capsys.readouterr().out
    assert metrics_file.stat().st_mtime_ns == before
    assert json.loads((tmp_path / "out" / "results.json").read_text())["arms"] == results["arms"]


def test_per_seed_table_shows_every_arm_and_what_mel_kept(study):
    records = [{"arm": "GRPO", "seed": 0, "metrics": {"pass@1": 0.5, "avg@4": 0.25}},
               {"arm": "MEL", "seed": 0, "kept": 2, "train": {"constructed": 7, "truncated": 3},
                "metrics": {"pass@1": 0.75, "avg@4": 0.5}},
               {"arm": "untrained + MEL bank", "seed": 0, "metrics": {"pass@1": 0.125, "avg@4": 0.0}},
               {"arm": "MEL + own bank", "seed": 0, "metrics": None}]
    rows = study.per_seed_table({"seeds": [0], "metrics": ["pass@1", "avg@4"], "records": records})
    assert rows[-1] == "| 0 | 50.0 / 25.0 | 75.0 / 50.0 | 12.5 / 0.0 | — | 7 / 3 / 2 |"
    assert study.per_seed_table({"seeds": [0], "metrics": ["pass@1", "avg@4"]}) == []


def test_the_teacher_arm_trains_mel_with_the_named_endpoint(study, capsys):
    from argparse import Namespace

    from melrl.cli import parse_train_args, preset_path

    args = Namespace(teacher_url="http://127.0.0.1:8000/v1", teacher_model="Qwen/Qwen2.5-7B-Instruct")
    _, config = parse_train_args(["--config", str(preset_path("study.yaml")), "--output_dir", "runs/x",
                                  *study.method_args(args, study.TEACHER)])
    assert (config.meta_experience, config.analyst, config.analyst_base_url, config.analyst_model) == (
        True, "endpoint", "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct")
    _, mel = parse_train_args(["--config", str(preset_path("study.yaml")), "--output_dir", "runs/x",
                               *study.method_args(args, "MEL")])
    assert mel.meta_experience and mel.analyst == "policy"
    with pytest.raises(SystemExit):
        study.main(["--teacher-url", "http://127.0.0.1:8000/v1"])
    assert "--teacher-url and --teacher-model go together" in capsys.readouterr().err
