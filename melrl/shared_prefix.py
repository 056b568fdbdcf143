"""Generation that prefills what its rows' prompts share once, not once per row.

Two things repeat in the prompts of one generate call. Every analysis prompt begins with the same instruction of
about 480 tokens, and every replay prompt with a shorter one. And every rollout prompt appears G times, once per
sample of its group. With left padding, `generate` computes the keys and values of all of it for each row. On a
CPU the prefill is compute-bound: 10 analysis prompts of about 700 tokens take 20 s to prefill on 2 cores, and
their 48 new tokens another 10 s.

`generate_with_shared_prefix` prefills each distinct prompt once, and the longest common prefix of the distinct
prompts once, then copies the cache to every row. Each row is laid out as prefix | padding | rest of the prompt.
The prompt keeps its width, so the completion starts where the caller expects it; position ids follow the
attention mask, so every token keeps its position. Tokens and scores equal plain generation's up to rounding.
Decoding writes into a cache with room to spare (`melrl.kv_cache`) instead of copying the cache at every step.
Whatever the layout cannot serve (right padding, nothing shared, a static or sliding-window cache, extra model
inputs) goes to plain `generate`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer

from .kv_cache import growing_cache

MIN_SHARED_TOKENS = 32  # below this the extra forward call costs about what sharing saves
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")  # that serve the prefix layout, with padding inside a row
# What `generate` takes besides the prompt and still serves from a shared prefix
GENERATION_SETTINGS = set(GenerationConfig().to_dict()) | {"logits_processor", "stopping_criteria", "streamer",
                                                           "synced_gpus"}


@contextmanager
def shared_prefix_generation(model: torch.nn.Module, enabled: bool = True):
    """While active, `model.generate(input_ids=..., attention_mask=...)` prefills what the rows share once and
    decodes into a `GrowingLayer` cache."""
    if not enabled:
        yield
        return
    own = vars(model).get("generate")
    original = model.generate

    def generate(*args, **kwargs):
        return generate_with_shared_prefix(model, original, *args, **kwargs)

    model.generate = generate
    try:
        yield
    finally:
        if own is None:
            del model.generate
        else:
            model.generate = own


def generate_with_shared_prefix(model, generate: Callable, input_ids=None, attention_mask=None,
                                generation_config=None, **kwargs):
    """`generate(input_ids=..., attention_mask=..., ...)` with what the left-padded rows share prefilled once.
    Returns what `generate` returns; each row's prompt part is laid out prefix | padding | rest."""
    arguments = dict(generation_config=generation_config, **kwargs)
    config = generation_config or model.generation_config

    def setting(name, default=None):
        value = kwargs.get(name, getattr(config, name, None))
        return default if value is None else value

    fits = input_ids is not None and attention_mask is not None and _settings_fit(model, set(kwargs), setting)
    if not fits:
        return generate(input_ids=input_ids, attention_mask=attention_mask, **arguments)
    share_prefix = getattr(model.config, "_attn_implementation", None) in ATTENTION_IMPLEMENTATIONS
    plan = shared_prefill_plan(input_ids, attention_mask, pad_id=setting("pad_token_id", 0),
                               share_prefix=share_prefix)
    if plan is None:
        cache = DynamicCache(config=model.config)
    else:
        input_ids, attention_mask, cache = plan.input_ids, plan.attention_mask, plan.prefill(model)
    return generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=growing_cache(cache),
                    **arguments)


@dataclass
class SharedPrefill:
    """What a batch of prompts shares: `prefix` (1, P) common to every row, and the distinct rows
    (`distinct_ids`, (U, W), laid out prefix | padding | rest) that row i repeats (`rows[i]`)."""

    prefix: torch.Tensor
    distinct_ids: torch.Tensor
    distinct_mask: torch.Tensor
    rows: torch.Tensor

    @property
    def input_ids(self) -> torch.Tensor:
        return self.distinct_ids[self.rows]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.distinct_mask[self.rows]

    def prefill(self, model) -> DynamicCache:
        """The cache of the shared prefix, and of each distinct prompt but its last token where prompts repeat,
        one row per row of the batch. `generate` computes the rest."""
        cache = prefill(model, self.prefix) if self.prefix.size(1) else DynamicCache(config=model.config)
        distinct, width = self.distinct_ids.shape
        if distinct == self.rows.numel():  # nothing repeats: `generate` prefills each row's rest itself
            cache.batch_repeat_interleave(distinct)
            return cache
        if self.prefix.size(1):
            cache.batch_repeat_interleave(distinct)
        start, stop = self.prefix.size(1), width - 1
        if stop > start:
            mask = self.distinct_mask.to(model.device)
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as `generate` computes them
            with torch.no_grad():
                model(input_ids=self.distinct_ids[:, start:stop].to(model.device), attention_mask=mask[:, :stop],
                      position_ids=positions[:, start:stop], past_key_values=cache, use_cache=True,
                      **_one_logit(model))
        cache.batch_select_indices(self.rows.to(model.device))
        return cache


def shared_prefill_plan(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int,
                        share_prefix: bool = True) -> SharedPrefill | None:
    """What the left-padded rows share (repeated prompts; with `share_prefix`, also the common prefix of the
    distinct ones), or None where it is too little to be worth a forward pass of its own: a common prefix shorter
    than `MIN_SHARED_TOKENS` and fewer than `MIN_SHARED_TOKENS` tokens of repeated prompts."""
    batch, width = input_ids.shape
    if batch < 2 or not _left_padded(attention_mask):
        return None
    distinct, rows = torch.unique(torch.cat([input_ids, attention_mask.to(input_ids)], dim=1), dim=0,
                                  return_inverse=True)
    distinct_ids, distinct_mask = distinct[:, :width], distinct[:, width:].to(attention_mask)
    layout = shared_prefix_layout(distinct_ids, distinct_mask, pad_id) if share_prefix else None
    if layout is not None:
        return SharedPrefill(*layout, rows)
    repeated_tokens = int(attention_mask[:, :-1].sum() - distinct_mask[:, :-1].sum())  # the last token is generate's
    if repeated_tokens < MIN_SHARED_TOKENS:
        return None
    return SharedPrefill(input_ids[:1, :0], distinct_ids, distinct_mask, rows)


def _left_padded(attention_mask: torch.Tensor) -> bool:
    width = attention_mask.size(1)
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(width, device=attention_mask.device)
    return torch.equal(attention_mask, (positions >= (width - lengths).unsqueeze(1)).to(attention_mask))


def shared_prefix_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int):
    """(prefix (1, P), ids (B, W), mask (B, W)) with rows laid out prefix | padding | rest, or None where the
    rows are not left-padded, fewer than two, or share fewer than `MIN_SHARED_TOKENS` tokens. Every row keeps at
    least one token after the prefix, the input of the first generation step."""
    batch, width = input_ids.shape
    lengths = attention_mask.sum(dim=1)
    if batch < 2 or not _left_padded(attention_mask):
        return None
    limit = int(lengths.min()) - 1
    if limit < MIN_SHARED_TOKENS:
        return None
    heads = torch.stack([row[width - length:][:limit] for row, length in zip(input_ids, lengths.tolist())])
    differs = (heads != heads[0]).any(dim=0)
    shared = int(differs.nonzero()[0]) if differs.any() else limit
    if shared < MIN_SHARED_TOKENS:
        return None
    ids = torch.full_like(input_ids, pad_id)
    mask = torch.zeros_like(attention_mask)
    for row, length in enumerate(lengths.tolist()):
        ids[row, :shared] = heads[0, :shared]
        ids[row, width - length + shared:] = input_ids[row, width - length + shared:]
        mask[row, :shared] = 1
        mask[row, width - length + shared:] = 1
    return heads[:1, :shared], ids, mask


def prefill(model, prefix: torch.Tensor) -> DynamicCache:
    """The cache of one forward pass over `prefix` (1, P), without computing logits for all P positions."""
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=prefix.to(model.device), past_key_values=cache, use_cache=True, **_one_logit(model))
    return cache


def _settings_fit(model, arguments: set[str], setting: Callable) -> bool:
    """Text-only inputs, one sequence per row, no assistant, and the dynamic full-attention cache that `generate`
    would itself build."""
    if arguments - GENERATION_SETTINGS:  # model inputs such as pixel values or a cache of the caller's own
        return False
    if (setting("cache_implementation") is not None or setting("use_cache", True) is False
            or setting("num_return_sequences", 1) != 1 or setting("num_beams", 1) != 1
            or setting("prompt_lookup_num_tokens") is not None or setting("assistant_model") is not None):
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # configurations DynamicCache cannot lay out
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _one_logit(model) -> dict:
    """The forward argument that skips the logits of all positions but the last, where the model takes it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the causal LM
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(type(base).forward).parameters else {}
