"""With the loop off, `MELTrainer` takes what `trl.GRPOTrainer` takes: prompt-only data, `args=None`, TRL's rules on
reward sources. With the loop on, what the loop lacks is named before any weights load."""

import json

import pytest
from datasets import Dataset

from melrl.models import load_model_and_tokenizer
from melrl.training.config import MELConfig
from melrl.training.rewards import AccuracyReward
from melrl.training.trainer import MELTrainer
from tests.test_trainer import make_config, make_dataset, parity_accuracy


def prompt_only(n=8):
    return Dataset.from_dict({"prompt": [f"Count to {i}:" for i in range(n)]})


def build(tiny_model_dir, dataset, args, **kwargs):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    return MELTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, **kwargs)


def test_loop_off_trains_on_prompts_alone_with_a_user_reward(tiny_model_dir, tmp_path):
    trainer = build(tiny_model_dir, prompt_only(), make_config(tmp_path, meta_experience=False, max_steps=1),
                    reward_funcs=[parity_accuracy])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.reward_func_names == ["accuracy"]
    assert any(not p.equal(before[n]) for n, p in trainer.model.named_parameters())
    (line,) = [json.loads(text) for text in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["rollouts"] == 8 and line["pairs"] == 0


def test_loop_off_without_a_reward_source_fails_as_grpo_does(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="No reward source provided"):
        build(tiny_model_dir, prompt_only(), make_config(tmp_path, meta_experience=False))


def test_the_loop_gets_the_accuracy_reward_when_no_reward_source_is_given(tiny_model_dir, tmp_path):
    trainer = build(tiny_model_dir, make_dataset(), make_config(tmp_path))
    assert trainer.reward_func_names == ["accuracy"] and isinstance(trainer.reward_funcs[0], AccuracyReward)


def test_a_rollout_func_keeps_trls_rule_on_reward_sources(tiny_model_dir, tmp_path):
    # a rollout function supplies completions, not rewards: TRL asks for a reward source, and so does MEL
    with pytest.raises(ValueError, match="No reward source provided"):
        build(tiny_model_dir, make_dataset(), make_config(tmp_path), rollout_func=lambda prompts, trainer: {})


@pytest.mark.parametrize("reward_funcs", [None, [parity_accuracy]])
def test_the_loop_names_the_columns_it_lacks(tiny_model_dir, tmp_path, reward_funcs):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['answer', 'problem'\].*meta_experience: false"):
        build(tiny_model_dir, prompt_only(), make_config(tmp_path), reward_funcs=reward_funcs)


def test_no_data_and_no_environment_fails_as_grpo_does(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="`train_dataset` is required"):
        build(tiny_model_dir, None, make_config(tmp_path), reward_funcs=[parity_accuracy])


def test_an_environment_that_owns_the_data_cannot_give_the_loop_its_columns(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"loop needs a train_dataset with the column\(s\) \['answer', 'problem'\]"):
        build(tiny_model_dir, None, make_config(tmp_path), reward_funcs=[parity_accuracy],
              environment_factory=lambda: None)


def test_the_default_accuracy_reward_needs_the_gold_answer_under_rft(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['answer'\]"):
        build(tiny_model_dir, prompt_only(), make_config(tmp_path, meta_experience=False, algorithm="rft"))


def test_args_none_builds_the_default_mel_config(tiny_model_dir, tmp_path, monkeypatch):
    from trl.trainer.base_config import _BaseConfig

    monkeypatch.chdir(tmp_path)
    post_init = _BaseConfig.__post_init__

    def on_cpu(config):  # the default config asks for bf16, which this machine may lack
        config.use_cpu = True
        post_init(config)

    monkeypatch.setattr(_BaseConfig, "__post_init__", on_cpu)
    trainer = build(tiny_model_dir, make_dataset(), None, reward_funcs=[parity_accuracy])
    assert type(trainer.args) is MELConfig and trainer.args.meta_experience
    assert trainer.args.output_dir.endswith("-MEL")
