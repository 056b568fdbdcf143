"""Loss terms as plain tensor functions (no trl / transformers imports)."""

from __future__ import annotations

import torch


def sequence_mean_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-averaged negative log-likelihood of each sequence (paper Eq. 7, inner term).

    Args:
        logits: (B, T, V) next-token logits at temperature 1, aligned so that `logits[:, t]` predicts
            `targets[:, t]`.
        targets: (B, T) token ids.
        mask: (B, T) 1 where a token carries loss, 0 elsewhere.

    Returns:
        (B,) the mean NLL over each row's masked tokens (0 for a row with no masked token).
    """
    logps = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    mask = mask.to(token_logps.dtype)
    return -(token_logps * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)
