"""The internalization NLL's batches: which kept meta-experiences each process trains in each micro-step of a
generation batch, as padded [analysis prompt | meta-experience] rows with their loss weights."""

from __future__ import annotations

import torch

from melrl.method.algorithms import context_and_target_rows, meta_experience_weights, token_log_probs
from melrl.method.meta_phase import MetaExperienceJob


def nll_batches(kept: list[MetaExperienceJob], average: str, world: int, rank: int, micro_steps: int, pad_id: int,
                device) -> dict[int, dict[str, torch.Tensor]]:
    """micro-step -> this process's rows, the kept meta-experiences dealt round-robin over processes, then micro-steps.

    Weights sum to 1 over all processes and micro-steps (`meta_experience_weights`). A process with none in a
    micro-step that another process uses gets one zero-weight row, so that every process runs the same forward and
    backward passes. Each batch: `input_ids`, `attention_mask` (B, P + T), `target_mask` (B, T), `weight` and
    `kept` (B,).
    """
    if not kept:
        return {}
    weights = meta_experience_weights([job.pair.group for job in kept], average)
    used: dict[int, list[int]] = {}
    for k in range(len(kept)):
        used.setdefault((k // world) % micro_steps, [])
        if k % world == rank:
            used[(k // world) % micro_steps].append(k)
    batches = {}
    for slot, mine in used.items():
        rows = mine or [0]
        batch = context_and_target_rows([kept[k].analysis_prompt_ids for k in rows],
                                        [kept[k].analysis_ids for k in rows], pad_id)
        batch["weight"] = torch.tensor([weights[k] if mine else 0.0 for k in rows])
        batch["kept"] = torch.full((len(rows),), 1.0 if mine else 0.0)
        batches[slot] = {key: value.to(device) for key, value in batch.items()}
    return batches


def target_log_probs(model, accelerator, fused: bool, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     target_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) temperature-1 log-probabilities of the last T tokens of each row (T = target_mask's width).

    `fused` (a rollout temperature of 1, the paper's): through TRL's fused LM head, which never holds (B, T, V)
    logits; otherwise from the model's temperature-1 logits of those T positions.
    """
    width = target_mask.size(1)
    if fused:
        labels = torch.full_like(input_ids, -100)
        labels[:, -width:] = input_ids[:, -width:].masked_fill(target_mask == 0, -100)
        with accelerator.autocast():
            outputs = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        return outputs.log_probs[:, -width:]
    with accelerator.autocast():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=width + 1,
                       use_cache=False).logits
    return token_log_probs(logits[:, :-1], input_ids[:, -width:])
