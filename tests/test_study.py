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


def test_markdown_table_has_one_row_per_method_and_the_untrained_model(study):
    results = {
        "seeds": [0, 1],
        "settings": {"eval_limit": 10, "steps": 3, "k": 4, "temperature": 0.7, "max_new_tokens": 48},
        "untrained": {"pass@1": 0.3, "avg@4": 0.2},
        "methods": {"GRPO": {"pass@1": study.mean_std([0.4, 0.6]), "avg@4": study.mean_std([0.2, 0.2])},
                    "MEL": {"pass@1": study.mean_std([0.5, 0.5]), "avg@4": study.mean_std([0.1, 0.3])}},
    }
    table = study.markdown(results)
    assert "| untrained | 30.0 | 20.0 |" in table
    assert "| GRPO (2 seeds) | 50.0 ± 14.1 | 20.0 ± 0.0 |" in table
    assert "| MEL (2 seeds) | 50.0 ± 0.0 | 20.0 ± 14.1 |" in table
    assert "10 held-out" in table and "seeds 0, 1" in table


def test_a_tiny_study_writes_its_results_and_resumes_without_retraining(study, tiny_model_dir, tmp_path, capsys):
    argv = ["--model", tiny_model_dir, "--seeds", "0", "--steps", "1", "--eval-limit", "2", "--k", "2",
            "--max-new-tokens", "8", "--work", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]
    assert study.main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["methods"]) == {"GRPO", "MEL"}
    assert set(results["untrained"]) == {"pass@1", "avg@2", "pass@2"}
    assert {run["method"] for run in results["runs"].values()} == {"GRPO", "MEL"}
    for run in results["runs"].values():
        assert run["train"]["steps"] == 1
    assert "| MEL (1 seeds) |" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "report.html").stat().st_size > 0

    metrics_file = tmp_path / "runs" / "mel-seed0" / "metrics.jsonl"
    before = metrics_file.stat().st_mtime_ns
    capsys.readouterr()
    assert study.main(argv) == 0
    assert "MEL seed 0: evaluation found" in capsys.readouterr().out
    assert metrics_file.stat().st_mtime_ns == before
    assert json.loads((tmp_path / "out" / "results.json").read_text())["methods"] == results["methods"]
