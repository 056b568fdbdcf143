"""Generation that prefills the prompt prefix all rows share once, not once per row.

Every analysis prompt begins with the same instruction of about 480 tokens, and every replay prompt with a shorter
one. With left padding, `generate` computes the keys and values of that prefix for each row. On a CPU the
prefill is compute-bound, and it is most of an analysis phase once there are several pairs: 10 analysis prompts
of about 700 tokens take 20 s to prefill on 2 cores, and their 48 new tokens another 10 s.

`generate_with_shared_prefix` runs the longest common prefix of the rows once, copies its cache to every row and
lays each row out as prefix | padding | rest of the prompt. The prompt keeps its width, so the completion starts
where the caller expects it; position ids follow the attention mask, so every token keeps its position. Tokens
and scores equal plain generation's up to rounding. Whatever the layout cannot serve (right padding, a prefix
shorter than `MIN_SHARED_TOKENS`, a static or sliding-window cache, extra model inputs) goes to plain `generate`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import contextmanager

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer

MIN_SHARED_TOKENS = 32  # below this the extra forward call costs about what sharing saves
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")  # tested with padding inside the sequence
# What `generate` takes besides the prompt and still serves from a shared prefix
GENERATION_SETTINGS = set(GenerationConfig().to_dict()) | {"logits_processor", "stopping_criteria", "streamer",
                                                           "synced_gpus"}


@contextmanager
def shared_prefix_generation(model: torch.nn.Module, enabled: bool = True):
    """While active, `model.generate(input_ids=..., attention_mask=...)` prefills the rows' shared prefix once."""
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
    """`generate(input_ids=..., attention_mask=..., ...)` with the shared prefix of the left-padded rows
    prefilled once. Returns what `generate` returns; each row's prompt part is laid out prefix | padding | rest."""
    arguments = dict(generation_config=generation_config, **kwargs)
    config = generation_config or model.generation_config

    def setting(name, default=None):
        value = kwargs.get(name, getattr(config, name, None))
        return default if value is None else value

    fits = input_ids is not None and attention_mask is not None and _settings_fit(model, set(kwargs), setting)
    layout = shared_prefix_layout(input_ids, attention_mask, pad_id=setting("pad_token_id", 0)) if fits else None
    if layout is None:
        return generate(input_ids=input_ids, attention_mask=attention_mask, **arguments)
    prefix, ids, mask = layout
    cache = prefill(model, prefix)
    cache.batch_repeat_interleave(ids.size(0))
    return generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **arguments)


def shared_prefix_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int):
    """(prefix (1, P), ids (B, W), mask (B, W)) with rows laid out prefix | padding | rest, or None where the
    rows are not left-padded, fewer than two, or share fewer than `MIN_SHARED_TOKENS` tokens. Every row keeps at
    least one token after the prefix, the input of the first generation step."""
    batch, width = input_ids.shape
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(width, device=attention_mask.device)
    left_padded = torch.equal(attention_mask, (positions >= (width - lengths).unsqueeze(1)).to(attention_mask))
    if batch < 2 or not left_padded:
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
    extra = {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(model) else {}
    with torch.no_grad():
        model(input_ids=prefix.to(model.device), past_key_values=cache, use_cache=True, **extra)
    return cache


def _settings_fit(model, arguments: set[str], setting: Callable) -> bool:
    """Text-only inputs, one sequence per row, no assistant, and the dynamic full-attention cache that `generate`
    would itself build."""
    if arguments - GENERATION_SETTINGS:  # model inputs such as pixel values or a cache of the caller's own
        return False
    if (getattr(model.config, "_attn_implementation", None) not in ATTENTION_IMPLEMENTATIONS
            or setting("cache_implementation") is not None or setting("use_cache", True) is False
            or setting("num_return_sequences", 1) != 1 or setting("num_beams", 1) != 1
            or setting("prompt_lookup_num_tokens") is not None or setting("assistant_model") is not None):
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # configurations DynamicCache cannot lay out
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _forward_parameters(model) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the causal LM
    return set(inspect.signature(type(base).forward).parameters)
