"""The `melrl` command line: help on every subcommand, config parsing, presets."""

import subprocess
import sys

import pytest
import yaml

from melrl.cli import build_parser, parse_train_args, preset_path


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["solve"], ["prepare-model"], ["train"], ["eval"], ["report"], ["experiences"], ["data"],
                ["data", "list"], ["data", "download"], ["data", "verify"]]
)
def test_every_subcommand_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "melrl", *command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_yaml_plus_overrides(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump({"dataset_name": "gsm8k", "num_generations": 4, "max_pairs_per_prompt": 3,
                                           "per_device_train_batch_size": 8, "use_cpu": True, "bf16": False}))
    run, config = parse_train_args(["--config", str(config_file), "--max_pairs_per_prompt", "1", "--output_dir",
                                    str(tmp_path / "out")])
    assert run.dataset_name == "gsm8k"
    assert config.num_generations == 4 and config.max_pairs_per_prompt == 1


def test_unknown_key_is_an_error(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump({"max_pair_per_prompt": 3}))
    with pytest.raises(ValueError, match="max_pair_per_prompt"):
        parse_train_args(["--config", str(config_file)])


TRAINING_PRESETS = sorted(p.name for p in preset_path("demo.yaml").parent.glob("*.yaml"))


@pytest.mark.parametrize("name", TRAINING_PRESETS)
def test_every_training_preset_uses_only_known_keys(name):
    from melrl.cli import check_config_keys
    from melrl.cli.train import RunArguments
    from melrl.training.config import MELConfig

    check_config_keys(preset_path(name), (RunArguments, MELConfig))
    values = yaml.safe_load(preset_path(name).read_text())
    assert set(values) >= {"model_name_or_path", "dataset_name", "num_generations", "learning_rate"}


def test_figure5_presets_cover_every_comparison():
    names = set(TRAINING_PRESETS)
    for algorithm in ("rft", "reinforce_pp"):
        plain = yaml.safe_load(preset_path(f"qwen3_8b_{algorithm}.yaml").read_text())
        with_me = yaml.safe_load(preset_path(f"qwen3_8b_{algorithm}_me.yaml").read_text())
        assert plain["algorithm"] == with_me["algorithm"] == algorithm
        assert (plain["meta_experience"], with_me["meta_experience"]) == (False, True)
        assert {k: v for k, v in plain.items() if k not in ("meta_experience", "output_dir")} == {
            k: v for k, v in with_me.items() if k not in ("meta_experience", "output_dir")}
    assert {"qwen3_8b_mel.yaml", "qwen3_8b_grpo.yaml"} <= names


def test_demo_preset_parses_into_a_cpu_config():
    run, config = parse_train_args(["--config", str(preset_path("demo.yaml"))])
    assert run.model_name_or_path == "smollm2-135m-instruct" and run.dataset_name == "arith"
    assert config.use_cpu and not config.bf16 and config.meta_experience
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps % config.num_generations == 0


def test_study_preset_is_the_demo_setup_with_its_own_schedule():
    run, config = parse_train_args(["--config", str(preset_path("study.yaml"))])
    assert run.model_name_or_path == "smollm2-135m-instruct" and run.dataset_name == "arith"
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps % config.num_generations == 0
    demo = yaml.safe_load(preset_path("demo.yaml").read_text())
    study = yaml.safe_load(preset_path("study.yaml").read_text())
    shared = ("prompt_template", "num_generations", "max_completion_length", "temperature", "analysis_max_new_tokens")
    assert {k: study[k] for k in shared} == {k: demo[k] for k in shared}


def test_parser_lists_the_subcommands():
    assert {"demo", "solve", "prepare-model", "train", "eval", "report", "experiences", "data"} <= set(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.slow
def test_demo_on_the_embedded_model_writes_run_files(tmp_path, capsys):
    from melrl.cli import main
    from melrl.jsonl import read_jsonl

    assert main(["demo", "--steps", "1", "--output-dir", str(tmp_path / "demo")]) == 0
    metrics = read_jsonl(tmp_path / "demo" / "metrics.jsonl")
    experiences = read_jsonl(tmp_path / "demo" / "experiences.jsonl")
    assert [m["step"] for m in metrics] == [1]
    assert len(experiences) >= 1 and sum(m["constructed"] for m in metrics) == len(experiences)
    # the analysis budget holds the paper's prompt and both solutions
    assert all(e["correct_solution"].strip() and e["incorrect_solution"].strip() for e in experiences)
    summary = capsys.readouterr().out
    assert "retention ratio" in summary and "Sample meta-experience" in summary


def _preset_memory():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "preset_memory.py"
    spec = importlib.util.spec_from_file_location("preset_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_presets_fit_80gb_gpus_by_the_documented_arithmetic():
    """Every paper preset fits one 80 GB GPU per process by tools/preset_memory.py's arithmetic (docs/presets.md,
    "Memory per preset", which shows the same rows), with vLLM's context holding its longest sequence."""
    from pathlib import Path

    memory = _preset_memory()
    paper = {n for n in TRAINING_PRESETS if n.startswith("qwen3_")} | {"vllm_server_mel.yaml"}
    assert set(memory.PAPER_PRESETS) == paper
    rows = [memory.preset_memory(name) for name in memory.PAPER_PRESETS]
    for row in rows:
        assert row["headroom_gib"] >= 3.0, row
        assert row["vllm_max_model_length"] >= row["context_needed"], row
        assert row["vllm_max_model_length"] <= memory.MODEL_CONTEXT
        assert row["kv_tokens"] >= row["vllm_max_model_length"], row  # vLLM starts only if one sequence fits
        if not row["server"]:
            assert row["rollouts_per_step"] == 1024 and row["prompts_per_step"] == 128
    page = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    for line in memory.markdown(rows).splitlines()[2:] + memory.cost_markdown(rows).splitlines()[2:]:
        assert line in page, f"docs/presets.md's memory or cost table is out of date: {line}"
