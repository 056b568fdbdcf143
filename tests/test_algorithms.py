"""Advantage estimators against hand-computed values, the RFT loss, and every algorithm × meta-experience run."""

import json
import math

import pytest
import torch

from melrl.method.algorithms import compute_advantages, rft_loss_sum, sequence_mean_nll, token_log_probs

EPS = 1e-4


def test_grpo_normalises_within_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    # group 1: mean 0.25, unbiased std sqrt((0.75² + 3·0.25²)/3) = 0.5 -> (1 - 0.25)/0.5 = 1.5, (0 - 0.25)/0.5 = -0.5
    # group 2: mean 0.5, std sqrt(4·0.25/3) = 0.57735 -> ±0.86603
    expected = [1.5, -0.5, -0.5, -0.5, 0.86603, 0.86603, -0.86603, -0.86603]
    got = compute_advantages(rewards, 4, "grpo")
    assert got.tolist() == pytest.approx(expected, abs=1e-3)
    assert compute_advantages(rewards, 4, "grpo", scale=False).tolist() == pytest.approx(
        [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]
    )


def test_reinforce_pp_whitens_over_the_global_batch_without_baseline():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    # mean 5/8 = 0.625; unbiased std sqrt((5·0.375² + 3·0.625²)/7) = sqrt(1.875/7) = 0.51755
    std = math.sqrt(1.875 / 7)
    expected = [(r - 0.625) / (std + EPS) for r in rewards.tolist()]
    assert compute_advantages(rewards, 4, "reinforce_pp").tolist() == pytest.approx(expected, rel=1e-5)


def test_reinforce_pp_baseline_subtracts_group_mean_then_whitens_globally():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    centred = [0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0]  # group means 0.25 and 1
    mean = sum(centred) / 8  # 0
    std = math.sqrt(sum((c - mean) ** 2 for c in centred) / 7)  # sqrt(0.75/7)
    expected = [(c - mean) / (std + EPS) for c in centred]
    assert compute_advantages(rewards, 4, "reinforce_pp_baseline").tolist() == pytest.approx(expected, rel=1e-5)


def test_rft_marks_correct_rollouts():
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0])
    assert compute_advantages(rewards, 2, "rft").tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("method", ["grpo", "reinforce_pp", "reinforce_pp_baseline"])
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_groups_with_equal_rewards_get_zero_advantage(method, value):
    rewards = torch.full((8,), value)
    assert torch.equal(compute_advantages(rewards, 4, method), torch.zeros(8))


def test_equal_groups_stay_zero_under_group_baseline_but_not_under_global_whitening():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])  # group 1 all correct
    assert compute_advantages(rewards, 4, "grpo")[:4].abs().max() == 0
    assert compute_advantages(rewards, 4, "reinforce_pp_baseline")[:4].abs().max() == 0
    assert compute_advantages(rewards, 4, "reinforce_pp")[:4].min() > 0  # no baseline: above the batch mean


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="groups of 4"):
        compute_advantages(torch.zeros(6), 4, "grpo")
    with pytest.raises(ValueError, match="unknown advantage method"):
        compute_advantages(torch.zeros(4), 4, "ppo")


def test_rft_loss_is_nll_of_correct_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 2, 3], [4, 0, 1]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    logps = token_log_probs(logits, targets)
    # only row 1 is correct: its three tokens
    by_hand = -sum(torch.log_softmax(logits[1, t], -1)[targets[1, t]].item() for t in range(3))
    assert rft_loss_sum(logps, mask, torch.tensor([0.0, 1.0])).item() == pytest.approx(by_hand, rel=1e-5)
    assert sequence_mean_nll(logps, mask)[1].item() == pytest.approx(by_hand / 3, rel=1e-5)


ALGORITHMS = ["grpo", "reinforce_pp", "reinforce_pp_baseline", "rft"]


@pytest.mark.parametrize("meta_experience", [False, True])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_trains_with_and_without_meta_experience(tiny_model_dir, tmp_path, algorithm,
                                                                 meta_experience):
    from tests.test_trainer import make_trainer

    trainer = make_trainer(tiny_model_dir, tmp_path, algorithm=algorithm, meta_experience=meta_experience,
                           max_steps=1, learning_rate=1e-2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed, f"{algorithm} did not update the model"
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert (line["constructed"] > 0) == meta_experience


@pytest.mark.parametrize(
    "overrides",
    [{"loss_type": "grpo"}, {"loss_type": "dr_grpo"}, {"loss_type": "dapo"}, {"loss_type": "bnpo"},
     {"importance_sampling_level": "sequence", "loss_type": "grpo"}],
)
def test_trl_loss_variants_work_with_meta_experience(tiny_model_dir, tmp_path, overrides, monkeypatch):
    import melrl.training.trainer as trainer_module
    from tests.test_trainer import fake_judge, make_trainer

    monkeypatch.setattr(trainer_module, "judge_analysis", fake_judge)
    monkeypatch.setattr(trainer_module, "verify_batch", lambda texts, golds, **kw: [True] * len(texts))
    trainer = make_trainer(tiny_model_dir, tmp_path, max_steps=1, **overrides)
    trainer.train()
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["kept"] > 0 and line["nll"] is not None and math.isfinite(line["nll"])
