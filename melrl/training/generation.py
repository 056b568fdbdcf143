"""Generation for the meta-experience phase on the engine that makes the rollouts (transformers, TRL's continuous
batching, vLLM colocate or server), through the trainer's own `_generate_single_turn`, and the rollouts it reads.

Grammar-guided analyses (`analysis_guidance: sections`, `melrl.method.guidance`) take the same route on vLLM, with
the skeleton's regex set as the vLLM generation's structured-outputs regex for that call only. On the transformers
paths (plain `generate` and continuous batching alike) TRL's `_generate_single_turn` takes no logits processor, so
guided analyses call the unwrapped model's `generate` themselves (`_guided_generate`), with xgrammar's logits
processor and the trainer's generation config, inside the contexts TRL generates in.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import pad

from melrl.method.guidance import SectionGuidance


@dataclass
class Rollouts:
    """One generation batch, gathered over processes: G consecutive rows per prompt."""

    problems: list[str]
    golds: list[str]
    ids: list[str]
    completion_ids: list[list[int]]
    rewards: torch.Tensor  # (B, reward functions)
    correct: list[bool]


def generate_distributed(trainer, prompt_ids: list[list[int]], max_new_tokens: int,
                         guidance: SectionGuidance | None = None) -> list[list[int]]:
    """One completion per prompt, the prompts spread over the processes; every process gets all results.

    Every process makes exactly one generate call with the same number of prompts (padded with a copy of a real
    prompt), so that vLLM server mode, ZeRO-3 and FSDP stay in step. With `guidance`, every completion is
    constrained to its skeleton (vLLM: structured outputs; transformers: xgrammar's logits processor).
    """
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    mine = list(range(rank, len(prompt_ids), world))
    local = [prompt_ids[i] for i in mine] + [prompt_ids[0]] * (-(-len(prompt_ids) // world) - len(mine))
    with generation_budget(trainer, max_new_tokens):
        if guidance is None:
            completions, _ = trainer._generate_single_turn(local, None, {}, 1)
        elif trainer.use_vllm:
            with structured_outputs(trainer, guidance.regex):
                completions, _ = trainer._generate_single_turn(local, None, {}, 1)
        else:
            completions = _guided_generate(trainer, local, guidance)
    results: list[list[int]] = [[] for _ in prompt_ids]
    for i, ids in gather_object([(i, list(c)) for i, c in zip(mine, completions)]):
        results[i] = ids
    return results


@contextmanager
def generation_budget(trainer, max_new_tokens: int):
    """Give one generate call its own token budget on whichever engine makes the rollouts.

    vLLM (colocate and server): `VLLMGeneration.max_completion_length`, and `max_tokens` where the user's
    `generation_kwargs` name it (they go into vLLM's sampling parameters after TRL's own). TRL builds no
    `generation_config` then. transformers: the trainer's `generation_config` and TRL's `generation_kwargs`
    (`max_new_tokens`), which override the model's generation config at each call.
    """
    if trainer.use_vllm:
        engine = trainer.vllm_generation
        attributes = [(engine, "max_completion_length")]
        keys = [(engine.generation_kwargs, "max_tokens")]
    else:
        attributes = [(trainer.generation_config, "max_new_tokens")]
        kwargs = getattr(trainer, "generation_kwargs", None)
        keys = [(kwargs, "max_new_tokens")] if isinstance(kwargs, dict) else []
    keys = [(mapping, key) for mapping, key in keys if key in mapping]
    saved_attributes = [(target, name, getattr(target, name)) for target, name in attributes]
    saved_keys = [(mapping, key, mapping[key]) for mapping, key in keys]
    try:
        for target, name, _ in saved_attributes:
            setattr(target, name, max_new_tokens)
        for mapping, key, _ in saved_keys:
            mapping[key] = max_new_tokens
        yield
    finally:
        for target, name, value in saved_attributes:
            setattr(target, name, value)
        for mapping, key, value in saved_keys:
            mapping[key] = value


def analysis_guidance(trainer) -> SectionGuidance | None:
    """The skeleton constraint of the trainer's analyses (`analysis_guidance: sections`), built once; None under
    `analysis_guidance: none` (the paper's free generation)."""
    args = trainer.args
    if getattr(args, "analysis_guidance", "none") == "none":
        return None
    key = (args.analysis_prompt, args.analysis_max_new_tokens)
    cached = getattr(trainer, "_melrl_analysis_guidance", None)
    if cached is None or cached[0] != key:
        cached = (key, SectionGuidance.for_budget(args.analysis_prompt, args.analysis_max_new_tokens))
        trainer._melrl_analysis_guidance = cached
    return cached[1]


@contextmanager
def structured_outputs(trainer, regex: str | None):
    """Constrain one vLLM generate call to `regex` (TRL's `VLLMGeneration.structured_outputs_regex`, which the
    colocate engine and the server client read at each call); the rollouts' setting is restored afterwards."""
    target = trainer.vllm_generation
    saved = target.structured_outputs_regex
    target.structured_outputs_regex = regex
    try:
        yield
    finally:
        target.structured_outputs_regex = saved


def _vocab_size(model) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "vocab_size", None)


def _guided_generate(trainer, prompt_ids: list[list[int]], guidance: SectionGuidance) -> list[list[int]]:
    """TRL's transformers generation (`GRPOTrainer._generate_single_turn`'s `generate` branch: left padding, the
    trainer's generation config and end tokens, the same unwrap / ZeRO-3 gather / FSDP full-parameter contexts)
    with xgrammar's logits processor added; completions cut after their first end token."""
    tokenizer = trainer._tokenizer
    processor = guidance.logits_processor(tokenizer, vocab_size=_vocab_size(trainer.model),
                                          stop_token_ids=trainer.eos_token_ids)
    device = trainer.accelerator.device
    tensors = [torch.tensor(ids) for ids in prompt_ids]
    multiple = getattr(trainer, "pad_to_multiple_of", None)
    input_ids = pad(tensors, padding_value=tokenizer.pad_token_id, padding_side="left", pad_to_multiple_of=multiple)
    attention_mask = pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side="left",
                         pad_to_multiple_of=multiple)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator,
            gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            generation_kwargs=trainer.generation_kwargs,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as unwrapped_model,
        torch.no_grad(),
        trainer._dist.summon_full_params(trainer.model_wrapped, recurse=False),
    ):
        generated = unwrapped_model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                             generation_config=trainer.generation_config,
                                             logits_processor=[processor])
    completions = []
    end_tokens = set(trainer.eos_token_ids)
    for row in generated[:, input_ids.size(1):].tolist():
        end = next((i for i, token in enumerate(row) if token in end_tokens), None)
        completions.append(row if end is None else row[: end + 1])
    return completions
