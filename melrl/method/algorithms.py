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


def compute_advantages(
    rewards: torch.Tensor, group_size: int, method: str, eps: float = 1e-4, scale: bool = True
) -> torch.Tensor:
    """Advantages of a global batch of rollouts.

    Args:
        rewards: (B,) one scalar reward per rollout, B = n_prompts × group_size, each prompt's `group_size`
            rollouts consecutive. Gather it over all processes first: `reinforce_pp*` whiten over the whole batch.
        group_size: rollouts per prompt (G).
        method:
            - `grpo`: r minus its group mean, divided by the group std (+ `eps`), as TRL does (`scale=False`:
              no division, Dr. GRPO's choice);
            - `reinforce_pp`: whitened over the global batch, (r - mean) / (std + eps), no group baseline;
            - `reinforce_pp_baseline`: group mean subtracted, then whitened over the global batch;
            - `rft`: 1 for correct rollouts (reward >= 1), 0 otherwise.
        eps: added to every standard deviation.

    Returns:
        (B,) advantages, in the order of `rewards`. Standard deviations are unbiased (Bessel), as TRL's.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape (B,), got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"batch of {rewards.numel()} rewards is not a whole number of groups of {group_size}")
    rewards = rewards.float()
    grouped = rewards.view(-1, group_size)  # (n_prompts, G)
    if method == "grpo":
        centred = grouped - grouped.mean(dim=1, keepdim=True)
        if scale:
            centred = centred / (_std(grouped, dim=1) + eps)
        return centred.reshape(-1)
    if method == "reinforce_pp":
        return _whiten(rewards, eps)
    if method == "reinforce_pp_baseline":
        return _whiten((grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1), eps)
    if method == "rft":
        return (rewards >= 1.0 - 1e-6).float()
    raise ValueError(f"unknown advantage method {method!r}; choose one of {ADVANTAGE_METHODS}")


def _std(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    n = x.numel() if dim is None else x.size(dim)
    if n < 2:
        return torch.zeros(()) if dim is None else torch.zeros(x.shape[:dim] + (1,) + x.shape[dim + 1 :])
    return x.std() if dim is None else x.std(dim=dim, keepdim=True)


def _whiten(x: torch.Tensor, eps: float) -> torch.Tensor:
    return (x - x.mean()) / (_std(x) + eps)


def rft_loss_sum(per_token_logps: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Summed NLL of the correct rollouts' tokens (RFT); divide by the correct-token count of the batch.

    Args:
        per_token_logps: (B, T) log-probabilities of the sampled tokens.
        mask: (B, T) 1 on completion tokens.
        correct: (B,) 1 for a correct rollout, 0 otherwise.
    """
    weights = mask.to(per_token_logps.dtype) * correct.to(per_token_logps.dtype).unsqueeze(1)  # (B, T)
    return -(per_token_logps * weights).sum()
