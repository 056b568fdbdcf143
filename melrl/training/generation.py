"""Generation for the meta-experience phase on the engine that makes the rollouts (transformers, TRL's continuous
batching, vLLM colocate or server), through the trainer's own `_generate_single_turn`, and the rollouts it reads."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object


@dataclass
class Rollouts:
    """One generation batch, gathered over processes: G consecutive rows per prompt."""

    problems: list[str]
    golds: list[str]
    ids: list[str]
    completion_ids: list[list[int]]
    rewards: torch.Tensor  # (B, reward functions)
    correct: list[bool]


def generate_distributed(trainer, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """One completion per prompt, the prompts spread over the processes; every process gets all results.

    Every process makes exactly one generate call with the same number of prompts (padded with a copy of a real
    prompt), so that vLLM server mode, ZeRO-3 and FSDP stay in step.
    """
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    mine = list(range(rank, len(prompt_ids), world))
    local = [prompt_ids[i] for i in mine] + [prompt_ids[0]] * (-(-len(prompt_ids) // world) - len(mine))
    with generation_budget(trainer, max_new_tokens):
        completions, _ = trainer._generate_single_turn(local, None, {}, 1)
    results: list[list[int]] = [[] for _ in prompt_ids]
    for i, ids in gather_object([(i, list(c)) for i, c in zip(mine, completions)]):
        results[i] = ids
    return results


@contextmanager
def generation_budget(trainer, max_new_tokens: int):
    """Give one generate call its own token budget on whichever engine makes the rollouts."""
    targets = [(trainer.generation_config, "max_new_tokens")]
    if trainer.use_vllm:
        targets.append((trainer.vllm_generation, "max_completion_length"))
    saved = [(target, name, getattr(target, name)) for target, name in targets if target is not None]
    kwargs = trainer.generation_kwargs if isinstance(getattr(trainer, "generation_kwargs", None), dict) else {}
    saved_kwarg = kwargs.get("max_new_tokens")
    try:
        for target, name, _ in saved:
            setattr(target, name, max_new_tokens)
        if kwargs:
            kwargs["max_new_tokens"] = max_new_tokens
        yield
    finally:
        for target, name, value in saved:
            setattr(target, name, value)
        if kwargs:
            kwargs["max_new_tokens"] = saved_kwarg
