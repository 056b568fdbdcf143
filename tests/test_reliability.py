"""Faults: a process killed mid-step and resumed, non-finite losses, bad configurations, partial checkpoints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trl import GRPOTrainer

from melrl.cli.train import RunArguments
from melrl.training.config import MELConfig
from melrl.data import DatasetError
from melrl.jsonl import read_jsonl
from melrl.training.resume import COMPLETE_MARKER, complete_checkpoints, resolve_checkpoint
from tests.helpers import without_times

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, expect_kill=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "tests.resume_run", *map(str, args)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    if expect_kill:
        assert result.returncode == -9, result.stderr[-3000:]
    else:
        assert result.returncode == 0, result.stderr[-3000:]


def test_killed_run_resumes_like_an_uninterrupted_one(tiny_model_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_script(tiny_model_dir, whole)
    run_script(tiny_model_dir, killed, "--kill-at-step", 3, expect_kill=True)

    # Killed inside step 3's update: two checkpoints, step 3's experiences written, its metrics line not.
    assert [p.name for p in complete_checkpoints(killed)] == ["checkpoint-1", "checkpoint-2"]
    assert {e["step"] for e in read_jsonl(killed / "experiences.jsonl")} >= {3}
    assert [m["step"] for m in read_jsonl(killed / "metrics.jsonl")] == [1, 2]

    run_script(tiny_model_dir, killed, "--resume")
    assert without_times(read_jsonl(killed / "metrics.jsonl")) == without_times(read_jsonl(whole / "metrics.jsonl"))
    assert read_jsonl(killed / "experiences.jsonl") == read_jsonl(whole / "experiences.jsonl")
    assert sum(m["constructed"] for m in read_jsonl(whole / "metrics.jsonl")) > 0

    from safetensors.torch import load_file

    final_whole = load_file(whole / "final" / "model.safetensors")
    final_killed = load_file(killed / "final" / "model.safetensors")
    for name, tensor in final_whole.items():
        assert torch.allclose(tensor, final_killed[name], atol=1e-6), name


def test_non_finite_loss_skips_the_update(tiny_model_dir, tmp_path, monkeypatch):
    from tests.test_trainer import make_trainer

    calls = {"n": 0}
    original = GRPOTrainer._compute_loss

    def nan_on_first_step(self, model, inputs):
        calls["n"] += 1
        loss = original(self, model, inputs)
        return loss * float("nan") if calls["n"] == 1 else loss

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", nan_on_first_step)
    trainer = make_trainer(tiny_model_dir, tmp_path, max_steps=1, learning_rate=1e-2, meta_experience=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    (line,) = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert line["skipped_update"] is True

    trainer.args.max_steps = 2
    trainer.train(resume_from_checkpoint=None)  # a finite step changes the weights again
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_incomplete_checkpoints_are_never_resumed(tmp_path):
    for step, complete in ((1, True), (2, True), (3, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if complete:
            (folder / COMPLETE_MARKER).write_text("{}")
    assert resolve_checkpoint(tmp_path, True).endswith("checkpoint-2")
    with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
        resolve_checkpoint(tmp_path / "empty", "last")
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        resolve_checkpoint(tmp_path, str(tmp_path / "nowhere"))


def test_checkpoints_are_marked_complete_and_rotation_keeps_the_best(tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    from tests.test_trainer import make_trainer

    class FirstIsBest(TrainerCallback):  # as an evaluation that found step 1 best would record it
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 1:
                state.best_model_checkpoint = str(tmp_path / "run" / "checkpoint-1")

    trainer = make_trainer(tiny_model_dir, tmp_path, max_steps=3, save_strategy="steps", save_steps=1,
                           save_total_limit=2, meta_experience=False)
    trainer.add_callback(FirstIsBest())
    trainer.train()
    run = tmp_path / "run"
    # two kept: the best and the last (rotation without the best would have kept checkpoints 2 and 3)
    assert [p.name for p in complete_checkpoints(run)] == ["checkpoint-1", "checkpoint-3"]
    marker = json.loads((run / "checkpoint-3" / COMPLETE_MARKER).read_text())
    assert marker == {"global_step": 3}


CPU = dict(use_cpu=True, bf16=False, report_to="none", output_dir="unused")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"per_device_train_batch_size": 6, "num_generations": 4}, "num_generations"),
        ({"max_pairs_per_prompt": 0}, "max_pairs_per_prompt"),
        ({"algorithm": "ppo"}, "algorithm"),
        ({"prompt_template": "nope"}, "prompt_template"),
        ({"replay_threshold": 0}, "replay_threshold"),
        ({"use_vllm": True, "vllm_max_model_length": 5000, "analysis_max_prompt_length": 4096,
          "analysis_max_new_tokens": 1024}, "analysis_max_prompt_length \\+ analysis_max_new_tokens = 5120"),
        ({"use_vllm": True, "vllm_max_model_length": 1000, "max_completion_length": 2048}, "max_completion_length"),
        ({"use_vllm": True, "vllm_max_model_length": 6000, "analysis_max_new_tokens": 2048,
          "analysis_max_prompt_length": 1024, "max_completion_length": 4096}, "analysis_max_new_tokens \\+ replay budget"),
    ],
)
def test_impossible_settings_name_their_key(values, message):
    with pytest.raises(ValueError, match=message):
        MELConfig(**CPU, **values)


def test_the_default_config_is_the_papers_method():
    config = MELConfig(**CPU)
    assert config.loss_type == "grpo"  # Eq. 10: each response's token mean, then the mean over responses
    assert config.max_pairs_per_prompt is None  # §3.2: every (correct, incorrect) pair
    assert config.meta_experience and config.mel_coef == 1.0 and config.experience_filter == "replay"


def fail_if_model_loads(*args, **kwargs):
    raise AssertionError("the model was loaded before the configuration was checked")


def test_budget_larger_than_the_context_fails_before_loading(tiny_model_dir, monkeypatch):
    import melrl.cli.train as train_module

    monkeypatch.setattr(train_module, "load_model_and_tokenizer", fail_if_model_loads)
    config = MELConfig(**CPU, per_device_train_batch_size=4, num_generations=4, analysis_max_prompt_length=4000,
                       analysis_max_new_tokens=2000)
    with pytest.raises(ValueError, match="analysis_max_prompt_length .* context of 4096"):
        train_module.build_trainer(RunArguments(model_name_or_path=tiny_model_dir, arith_size=8), config)


@pytest.mark.parametrize(
    "run, error, message",
    [
        (RunArguments(dataset_name="no_such_dataset"), DatasetError, "no_such_dataset"),
        (RunArguments(model_name_or_path="/no/such/model", arith_size=8), FileNotFoundError, "/no/such/model"),
    ],
)
def test_missing_dataset_or_model_fails_before_loading(run, error, message, monkeypatch):
    import melrl.cli.train as train_module

    monkeypatch.setattr(train_module, "load_model_and_tokenizer", fail_if_model_loads)
    config = MELConfig(**CPU, per_device_train_batch_size=4, num_generations=4)
    with pytest.raises(error, match=message):
        train_module.build_trainer(run, config)


def test_the_longest_problem_must_fit_vllms_context(tiny_model_dir):
    from transformers import AutoTokenizer

    from melrl.data import Record
    from melrl.cli.train import check_vllm_prompt_budgets

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = [Record("short", "t", "What is 1 + 1?", "2"), Record("long", "t", "Add these: " + "7 + " * 300 + "7.", "2107")]
    config = MELConfig(**CPU, use_vllm=True, vllm_max_model_length=1536, max_completion_length=256,
                       analysis_max_prompt_length=512, analysis_max_new_tokens=512)
    check_vllm_prompt_budgets(records[:1], tokenizer, config)  # fits
    with pytest.raises(ValueError, match=r"replay prompt .* \(problem long\) does not fit vllm_max_model_length = 1536"):
        check_vllm_prompt_budgets(records, tokenizer, config)
    config.max_completion_length = 1400
    with pytest.raises(ValueError, match=r"longest solve prompt \+ max_completion_length = \d+ tokens \(problem long\)"):
        check_vllm_prompt_budgets(records, tokenizer, config)
