"""Advantage estimators against hand-computed values, the RFT loss, and every algorithm × meta-experience run."""

import json
import math

import pytest
import torch

from melrl.method.algorithms import (
    compute_advantages,
    kl_penalty,
    rft_loss_sum,
    sequence_mean_nll,
    token_log_probs,
)

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


def reinforce_pp_by_definition(rewards, mask, group_size, baseline, kl=None, beta=0.0):
    """REINFORCE++ as verl defines it, token by token in plain Python (float64): token rewards (the outcome reward at
    the last valid token, minus beta x KL at every valid token); returns-to-go (gamma = 1) or, with the baseline,
    the row's summed token rewards minus its group mean at every token; whitened over all valid tokens of the batch
    with the masked mean and the unbiased masked variance, (x - mean) / sqrt(var + 1e-8)."""
    rewards, mask = rewards.tolist(), mask.tolist()
    kl = kl.tolist() if kl is not None else None
    lengths = [int(sum(row)) for row in mask]
    token_rewards = []
    for b, n in enumerate(lengths):
        row = [-beta * kl[b][t] if kl is not None else 0.0 for t in range(n)]
        row[n - 1] += rewards[b]
        token_rewards.append(row)
    if baseline:
        scores = [sum(row) for row in token_rewards]
        values = []
        for b, n in enumerate(lengths):
            group = scores[b - b % group_size : b - b % group_size + group_size]
            values.append([scores[b] - sum(group) / len(group)] * n)
    else:
        values = [[sum(row[t:]) for t in range(len(row))] for row in token_rewards]
    valid = [v for row in values for v in row]
    mean = sum(valid) / len(valid)
    var = sum((v - mean) ** 2 for v in valid) / (len(valid) - 1)
    width = len(mask[0])
    return [[(row[t] - mean) / math.sqrt(var + 1e-8) if t < len(row) else 0.0 for t in range(width)]
            for row in values]


def random_batch(seed, n_prompts=3, group_size=4, width=7):
    generator = torch.Generator().manual_seed(seed)
    batch = n_prompts * group_size
    rewards = torch.randint(0, 2, (batch,), generator=generator).float()
    rewards[0] = 0.5  # a reward that is neither 0 nor 1
    lengths = torch.randint(1, width + 1, (batch,), generator=generator)
    lengths[1] = width  # one row fills the width
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()  # prefixes, as TRL's completion_mask
    kl = torch.randn(batch, width, generator=generator).abs() * 0.3
    return rewards, mask, kl


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.0, 0.2])
@pytest.mark.parametrize("method", ["reinforce_pp", "reinforce_pp_baseline"])
def test_reinforce_pp_matches_the_reference_definition(method, beta, seed):
    rewards, mask, kl = random_batch(seed)
    got = compute_advantages(rewards, 4, method, response_mask=mask, token_kl=kl if beta else None, kl_coef=beta)
    expected = reinforce_pp_by_definition(rewards, mask, 4, method == "reinforce_pp_baseline",
                                          kl if beta else None, beta)
    assert got.shape == mask.shape
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5)
    assert got[mask == 0].abs().max() == 0


def test_reinforce_pp_whitens_over_tokens_so_longer_responses_weigh_more():
    rewards = torch.tensor([1.0, 0.0])  # one group of two; the correct one is 1 token, the other 3
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    # token mean 1/4; unbiased variance (0.75² + 3·0.25²)/3 = 0.25
    advantages = compute_advantages(rewards, 2, "reinforce_pp", response_mask=mask)
    by_hand = [[0.75 / math.sqrt(0.25 + 1e-8), 0.0, 0.0], [-0.25 / math.sqrt(0.25 + 1e-8)] * 3]
    assert advantages.tolist() == [pytest.approx(row, rel=1e-6) for row in by_hand]
    assert advantages.sum().item() == pytest.approx(0.0, abs=1e-6)  # zero mean over tokens, not over rollouts


def test_reinforce_pp_returns_to_go_carry_the_kl_of_later_tokens():
    rewards, mask = torch.tensor([1.0, 0.0]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])  # the last entry is outside the mask: ignored
    # returns: row 0 = [1 - 0.06, 1 - 0.05, 1 - 0.03], row 1 = [-0.09, -0.05], before whitening (beta 0.1)
    returns = [0.94, 0.95, 0.97, -0.09, -0.05]
    mean = sum(returns) / 5
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 4 + 1e-8)
    got = compute_advantages(rewards, 2, "reinforce_pp", response_mask=mask, token_kl=kl, kl_coef=0.1)
    assert got[mask.bool()].tolist() == pytest.approx([(r - mean) / std for r in returns], rel=1e-5)
    assert kl_penalty(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])).tolist() == [0.5, -1.0]  # k1


@pytest.mark.parametrize("method", ["grpo", "rft"])
def test_sequence_level_methods_broadcast_over_the_mask(method):
    rewards, mask, _ = random_batch(0)
    per_rollout = compute_advantages(rewards, 4, method)
    assert per_rollout.shape == (12,)
    per_token = compute_advantages(rewards, 4, method, response_mask=mask)
    assert torch.equal(per_token, per_rollout.unsqueeze(1) * mask)


def test_rft_marks_correct_rollouts():
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0])
    assert compute_advantages(rewards, 2, "rft").tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("method", ["grpo", "reinforce_pp", "reinforce_pp_baseline"])
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_groups_with_equal_rewards_get_zero_advantage(method, value):
    rewards = torch.full((8,), value)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]] * 4)
    assert torch.equal(compute_advantages(rewards, 4, method, response_mask=mask), torch.zeros(8, 3))


def test_equal_groups_stay_zero_under_group_baseline_but_not_under_global_whitening():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])  # group 1 all correct
    mask = torch.ones(8, 2)
    assert compute_advantages(rewards, 4, "grpo")[:4].abs().max() == 0
    assert compute_advantages(rewards, 4, "reinforce_pp_baseline", response_mask=mask)[:4].abs().max() == 0
    assert compute_advantages(rewards, 4, "reinforce_pp", response_mask=mask)[:4].min() > 0  # above the mean


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="groups of 4"):
        compute_advantages(torch.zeros(6), 4, "grpo")
    with pytest.raises(ValueError, match="unknown advantage method"):
        compute_advantages(torch.zeros(4), 4, "ppo")
    for method in ("reinforce_pp", "reinforce_pp_baseline"):
        with pytest.raises(ValueError, match="response_mask"):
            compute_advantages(torch.zeros(4), 4, method)
    with pytest.raises(ValueError, match="token_kl"):
        compute_advantages(torch.zeros(4), 4, "reinforce_pp", response_mask=torch.ones(4, 3), kl_coef=0.1)
    with pytest.raises(ValueError, match="no in-reward KL"):
        compute_advantages(torch.zeros(4), 4, "grpo", response_mask=torch.ones(4, 3), token_kl=torch.zeros(4, 3),
                           kl_coef=0.1)
    with pytest.raises(ValueError, match="shape"):
        compute_advantages(torch.zeros(4), 4, "reinforce_pp", response_mask=torch.ones(3, 3))


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
