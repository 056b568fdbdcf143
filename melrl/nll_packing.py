"""Meta-experiences trained in packs that compute the analysis context they share once.

The NLL trains each meta-experience M in its analysis context [I, x, y+, y-] (paper Eq. 7), and every analysis
context begins with the same instruction I (about 480 tokens of a 600-1000-token row). Trained one row each, the
instruction's forward and backward pass run once per meta-experience. A pack holds the prefix its
meta-experiences' contexts share once, followed by each one's rest of context and M:

    prefix | rest_1 M_1 | rest_2 M_2 | ...

and the packs of a micro-step go one after another in one row. `segment_attention` lets each segment attend to
its pack's prefix and itself (causally) and to nothing else, one SDPA call per prefix and per segment, so that
attention costs what it costs in separate rows (a dense mask over the whole row would cost the row's length
squared); and the position ids continue each segment from the end of its prefix. Every token sees exactly what it
sees in its own row, at its own position: the NLL of each meta-experience and its gradient are those of its own
row, up to rounding, with the prefix's gradient the sum of what each row gives it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from .algorithms import token_log_probs

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")  # the implementations a packed pass stands in for
SEGMENT_ATTENTION = "melrl_packed_segments"


@dataclass
class Pack:
    """Meta-experiences (`targets`) trained together, whose `contexts` share their first `prefix_length` tokens."""

    prefix_length: int
    contexts: list[list[int]]
    targets: list[list[int]]

    @property
    def length(self) -> int:
        return self.prefix_length + sum(len(c) - self.prefix_length + len(t)
                                        for c, t in zip(self.contexts, self.targets))


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest prefix all `sequences` share."""
    first = sequences[0]
    length = min(map(len, sequences))
    for position in range(length):
        if any(sequence[position] != first[position] for sequence in sequences[1:]):
            return position
    return length


def pack(contexts: list[list[int]], targets: list[list[int]], max_tokens: int) -> list[Pack]:
    """Group meta-experiences, in order, into packs of at most `max_tokens` tokens (a meta-experience longer than
    that on its own gets a pack of its own). One joins the pack before it where that takes fewer tokens than a
    pack of its own. Each context keeps at least its last token out of the prefix, so that its first target is
    predicted from inside its own segment."""
    packs: list[Pack] = []
    for context, target in zip(contexts, targets, strict=True):
        alone = Pack(len(context) - 1, [context], [target])
        if packs:
            last = packs[-1]
            shared = min(last.prefix_length, common_prefix_length([last.contexts[0], context]), len(context) - 1)
            grown = Pack(shared, last.contexts + [context], last.targets + [target])
            if grown.length <= max_tokens and grown.length < last.length + alone.length:
                packs[-1] = grown
                continue
        packs.append(alone)
    return packs


def packed_batch(packs: list[Pack], device) -> dict:
    """One row holding `packs` one after another. Returns `input_ids` and `position_ids` (1, T); `layout`, per pack
    (prefix start, prefix length, [(segment start, segment length), ...]) in row order, for `segment_attention`;
    `logit_positions` (N,) whose logits predict `targets` (1, N); and `segment` (N,), the meta-experience each
    target belongs to, numbered across the packs in order."""
    ids: list[int] = []
    positions: list[int] = []
    layout: list[tuple[int, int, list[tuple[int, int]]]] = []
    logit_positions: list[int] = []
    targets: list[int] = []
    segment: list[int] = []
    meta_experience = 0
    for group in packs:
        segments = []
        layout.append((len(ids), group.prefix_length, segments))
        ids += group.contexts[0][:group.prefix_length]
        positions += range(group.prefix_length)
        for context, target in zip(group.contexts, group.targets):
            rest = context[group.prefix_length:] + target
            segments.append((len(ids), len(rest)))
            first_target = len(ids) + len(context) - group.prefix_length
            logit_positions += range(first_target - 1, first_target - 1 + len(target))
            segment += [meta_experience] * len(target)
            meta_experience += 1
            ids += rest
            positions += range(group.prefix_length, group.prefix_length + len(rest))
            targets += target
    return {
        "input_ids": torch.tensor([ids], device=device),
        "position_ids": torch.tensor([positions], device=device),
        "layout": layout,
        "logit_positions": torch.tensor(logit_positions, device=device),
        "targets": torch.tensor([targets], device=device),
        "segment": torch.tensor(segment, device=device),
    }


def segment_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                      scaling: float | None = None, dropout: float = 0.0, packed_layout=None, sliding_window=None,
                      softcap=None, s_aux=None, **kwargs):
    """A transformers attention function for a packed row: each prefix attends to itself causally, each segment to
    its prefix and itself causally, each with its own SDPA call, so the cost is that of the separate rows and not
    of the whole row squared. `query` (1, heads, T, dim), `key` and `value` (1, kv heads, T, dim); returns
    (1, T, heads, dim)."""
    if packed_layout is None or any(x is not None for x in (sliding_window, softcap, s_aux)):
        raise ValueError("segment_attention serves packed NLL rows of full-attention models only")
    dropout = dropout if module.training else 0.0
    outputs = []

    def attend(q, k, v, **mask):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, enable_gqa=True, **mask)

    for prefix_start, prefix_length, segments in packed_layout:
        prefix = slice(prefix_start, prefix_start + prefix_length)
        prefix_key, prefix_value = key[:, :, prefix], value[:, :, prefix]
        if prefix_length:
            outputs.append(attend(query[:, :, prefix], prefix_key, prefix_value, is_causal=True))
        for start, length in segments:
            rows = slice(start, start + length)
            seen = torch.ones(length, prefix_length + length, dtype=torch.bool, device=query.device)
            seen[:, prefix_length:] = seen[:, prefix_length:].tril()
            outputs.append(attend(query[:, :, rows], torch.cat([prefix_key, key[:, :, rows]], dim=2),
                                  torch.cat([prefix_value, value[:, :, rows]], dim=2), attn_mask=seen))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
AttentionMaskInterface.register(SEGMENT_ATTENTION, lambda *args, **kwargs: None)  # the layout is the mask


def packable(config) -> bool:
    """Whether `config`'s model can train packed rows: sdpa or eager attention, every layer full attention, no
    logit soft-capping."""
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    return (getattr(config, "_attn_implementation", None) in ATTENTION_IMPLEMENTATIONS
            and set(layer_types) == {"full_attention"} and not sliding
            and getattr(config, "attn_logit_softcapping", None) is None)


@contextmanager
def packed_attention(model):
    """Within, `model` attends with `segment_attention`: its forward passes take `packed_layout=`. A checkpointed
    pass recomputes in its backward pass, which must run within too."""
    config = model.config
    implementation = config._attn_implementation
    config._attn_implementation = SEGMENT_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = implementation


def segment_mean_nll(token_logps: torch.Tensor, segment: torch.Tensor, segments: int) -> torch.Tensor:
    """(segments,) mean negative log-likelihood of each segment's tokens, from (N,) `token_logps`."""
    sums = torch.zeros(segments, dtype=token_logps.dtype, device=token_logps.device).index_add(0, segment,
                                                                                               -token_logps)
    counts = torch.bincount(segment, minlength=segments).clamp(min=1)
    return sums / counts


def packed_nll(model, batch: dict) -> torch.Tensor:
    """(meta-experiences,) mean NLL of each meta-experience of a `packed_batch`, in row order. Run within
    `packed_attention`."""
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], packed_layout=batch["layout"],
                   logits_to_keep=batch["logit_positions"], use_cache=False).logits
    segments = sum(len(segments) for *_, segments in batch["layout"])
    return segment_mean_nll(token_log_probs(logits, batch["targets"])[0], batch["segment"], segments)
