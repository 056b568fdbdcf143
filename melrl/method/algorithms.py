"""Loss terms as plain tensor functions (no trl / transformers imports)."""

from __future__ import annotations

import torch


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits and (B, T) targets -> (B, T) float32 log-probabilities of the targets under softmax(logits)."""
    log_p = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    return log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def sequence_mean_nll(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-averaged negative log-likelihood of each sequence (paper Eq. 7, inner term).

    Args:
        token_logps: (B, T) log-probabilities (at temperature 1) of the target tokens.
        mask: (B, T) 1 where a token carries loss, 0 elsewhere.

    Returns:
        (B,) the mean NLL over each row's masked tokens (0 for a row with no masked token).
    """
    mask = mask.to(token_logps.dtype)
    return -(token_logps * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)


NLL_AVERAGES = ("experience", "prompt")


def meta_experience_weights(prompts: list[int], average: str = "experience") -> list[float]:
    """Weights of the kept meta-experiences in the internalization loss, summing to 1.

    Args:
        prompts: for each kept meta-experience, the prompt (group) it was built from.
        average: `experience` (every kept meta-experience of the step alike: 1/N) or `prompt` (paper Eq. 10: the
            mean over the prompt's kept meta-experiences, then over prompts: 1 / (P * n_p)).
    """
    if average not in NLL_AVERAGES:
        raise ValueError(f"nll_average: {average!r} is not one of {NLL_AVERAGES}")
    if average == "experience":
        return [1.0 / len(prompts)] * len(prompts)
    counts = {prompt: prompts.count(prompt) for prompt in prompts}
    return [1.0 / (len(counts) * counts[prompt]) for prompt in prompts]


def context_and_target_rows(
    contexts: list[list[int]], targets: list[list[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Rows [context | target] for a likelihood loss on the targets: contexts left-padded, targets right-padded.

    Returns `input_ids` and `attention_mask` (B, P + T), and `target_mask` (B, T), 1 on the target tokens, which
    are the last T columns of `input_ids`.
    """
    width = max(map(len, contexts))
    length = max(map(len, targets))
    input_ids, attention_mask, target_mask = [], [], []
    for context, target in zip(contexts, targets, strict=True):
        left, right = width - len(context), length - len(target)
        input_ids.append([pad_id] * left + list(context) + list(target) + [pad_id] * right)
        attention_mask.append([0] * left + [1] * (len(context) + len(target)) + [0] * right)
        target_mask.append([1] * len(target) + [0] * right)
    return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(attention_mask),
            "target_mask": torch.tensor(target_mask)}


ADVANTAGE_METHODS = ("grpo", "reinforce_pp", "reinforce_pp_baseline", "rft")
TOKEN_LEVEL_METHODS = ("reinforce_pp", "reinforce_pp_baseline")  # per-token advantages; need the response mask
WHITEN_EPS = 1e-8  # verl's `masked_whiten`: added to the (unbiased) variance, under the square root


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate of the in-reward penalty: k1, log pi(y_t) - log pi_ref(y_t).

    verl's default `algorithm.kl_penalty: kl` (and OpenRLHF's default `kl_estimator: k1`); `logps` are the sampling
    policy's (verl's `old_log_probs`), so the penalty is a constant of the update. (B, T) -> (B, T).
    """
    return logps.float() - ref_logps.float()


def compute_advantages(
    rewards: torch.Tensor,
    group_size: int,
    method: str,
    response_mask: torch.Tensor | None = None,
    eps: float = 1e-4,
    scale: bool = True,
    token_kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Advantages of a global batch of rollouts.

    Args:
        rewards: (B,) one scalar (outcome) reward per rollout, B = n_prompts × group_size, each prompt's
            `group_size` rollouts consecutive. Gather it over all processes first: `reinforce_pp*` whiten over the
            whole batch.
        group_size: rollouts per prompt (G).
        method:
            - `grpo`: r minus its group mean, divided by the group std (+ `eps`), as TRL does (`scale=False`:
              no division, Dr. GRPO's choice);
            - `rft`: 1 for correct rollouts (reward >= 1), 0 otherwise;
            - `reinforce_pp` (REINFORCE++, verl's `compute_reinforce_plus_plus_outcome_advantage`): token rewards
              are the outcome reward at the row's last valid token minus `kl_coef` × `token_kl` at every valid
              token; the return at token t is the sum of the token rewards from t to the end (gamma = 1); the
              returns are whitened over every valid token of the batch (masked mean, unbiased masked variance,
              (x - mean) / sqrt(var + 1e-8)), so a longer response weighs more;
            - `reinforce_pp_baseline` (verl's `compute_reinforce_plus_plus_baseline_outcome_advantage`): each row's
              score (the sum of its token rewards: outcome reward minus `kl_coef` × its summed KL) minus its group's
              mean score (0 for a group of one), the same at every valid token, whitened over the valid tokens as
              above.
        response_mask: (B, T) 1 on the valid response tokens, a prefix of each row (as TRL's `completion_mask`).
            Required by `reinforce_pp*`; with it `grpo` and `rft` broadcast their (B,) advantages over it.
        eps: added to the group standard deviation of `grpo` (TRL's 1e-4). `reinforce_pp*` use the reference's
            `WHITEN_EPS` under the square root instead.
        scale: `grpo` only: divide by the group standard deviation.
        token_kl: (B, T) per-token KL estimate (`kl_penalty`), `reinforce_pp*` only; used when `kl_coef` != 0.
        kl_coef: coefficient (beta) of the KL penalty in the token rewards.

    Returns:
        (B, T) per-token advantages (0 outside the mask) when `response_mask` is given, else (B,) — in the order of
            `rewards`. Standard deviations are unbiased (Bessel), as TRL's and verl's. Whitening a batch with fewer
            than two valid tokens gives zeros (verl raises).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape (B,), got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"batch of {rewards.numel()} rewards is not a whole number of groups of {group_size}")
    if method not in ADVANTAGE_METHODS:
        raise ValueError(f"unknown advantage method {method!r}; choose one of {ADVANTAGE_METHODS}")
    if response_mask is not None and (response_mask.dim() != 2 or response_mask.size(0) != rewards.numel()):
        raise ValueError(f"response_mask must have shape (B={rewards.numel()}, T), got {tuple(response_mask.shape)}")
    if method in TOKEN_LEVEL_METHODS:
        if response_mask is None:
            raise ValueError(f"{method} computes per-token advantages: pass the (B, T) response_mask")
        return _reinforce_pp(rewards, group_size, response_mask, method == "reinforce_pp_baseline", token_kl,
                             kl_coef)
    if token_kl is not None or kl_coef:
        raise ValueError(f"{method} takes no in-reward KL (token_kl, kl_coef): only {TOKEN_LEVEL_METHODS} do")
    rewards = rewards.float()
    if method == "grpo":
        grouped = rewards.view(-1, group_size)  # (n_prompts, G)
        advantages = grouped - grouped.mean(dim=1, keepdim=True)
        if scale:
            advantages = advantages / (_std(grouped, dim=1) + eps)
        advantages = advantages.reshape(-1)
    else:  # rft
        advantages = (rewards >= 1.0 - 1e-6).float()
    if response_mask is None:
        return advantages
    return torch.where(response_mask.bool(), advantages.to(response_mask.device).unsqueeze(1), 0.0)


def _reinforce_pp(rewards, group_size, mask, baseline, token_kl, kl_coef) -> torch.Tensor:
    mask = mask.float()
    rewards = rewards.float().to(mask.device)
    token_rewards = torch.zeros_like(mask)
    if kl_coef:
        if token_kl is None or token_kl.shape != mask.shape:
            raise ValueError(f"kl_coef = {kl_coef} needs token_kl of the response_mask's shape {tuple(mask.shape)}")
        token_rewards = -kl_coef * torch.where(mask.bool(), token_kl.float().to(mask.device), 0.0)
    # the outcome reward sits at each row's last valid token (a row without one gets none)
    width = mask.size(1)
    last = width - 1 - mask.flip(1).argmax(dim=1)  # (B,)
    has_tokens = mask.sum(dim=1) > 0
    rows = torch.arange(mask.size(0), device=mask.device)
    token_rewards[rows[has_tokens], last[has_tokens]] += rewards[has_tokens]
    if baseline:
        scores = token_rewards.sum(dim=1).view(-1, group_size)  # (n_prompts, G)
        if group_size > 1:  # verl: a group of one has baseline 0
            scores = scores - scores.mean(dim=1, keepdim=True)
        values = scores.reshape(-1, 1) * mask  # (B, T): the centred score at every valid token
    else:
        values = token_rewards.flip(1).cumsum(dim=1).flip(1)  # return-to-go, gamma = 1
    return torch.where(mask.bool(), _masked_whiten(values, mask), 0.0)


def _masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's `masked_whiten`: mean and unbiased variance over the masked entries, (x - mean) / sqrt(var + 1e-8)."""
    count = mask.sum()
    if count < 2:
        return torch.zeros_like(values)
    mean = torch.where(mask.bool(), values, 0.0).sum() / (count + 1e-8)
    centred = values - mean
    var = torch.where(mask.bool(), centred**2, 0.0).sum() / (count + 1e-8) * count / (count - 1)
    return centred * torch.rsqrt(var + WHITEN_EPS)


def _std(grouped: torch.Tensor, dim: int) -> torch.Tensor:
    if grouped.size(dim) < 2:
        return torch.zeros(grouped.shape[:dim] + (1,) + grouped.shape[dim + 1 :])
    return grouped.std(dim=dim, keepdim=True)


def rft_loss_sum(per_token_logps: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Summed NLL of the correct rollouts' tokens (RFT); divide by the correct-token count of the batch.

    Args:
        per_token_logps: (B, T) log-probabilities of the sampled tokens.
        mask: (B, T) 1 on completion tokens.
        correct: (B,) 1 for a correct rollout, 0 otherwise.
    """
    weights = mask.to(per_token_logps.dtype) * correct.to(per_token_logps.dtype).unsqueeze(1)  # (B, T)
    return -(per_token_logps * weights).sum()
