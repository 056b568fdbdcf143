"""Meta-experiences trained in packs that compute the analysis context they share once.

The NLL trains each meta-experience M in its analysis context [I, x, y+, y-] (paper Eq. 7), and every analysis
context begins with the same instruction I (about 480 tokens of a 600-1000-token row). Trained one row each, the
instruction's forward and backward pass run once per meta-experience. A pack holds the prefix its
meta-experiences' contexts share once, followed by each one's rest of context and M:

    prefix | rest_1 M_1 | rest_2 M_2 | ...

and the packs of a micro-step go one after another in one row. An attention mask lets each segment see its pack's
prefix and itself (causally) and nothing else, and the position ids continue each segment from the end of its
prefix, so every token sees exactly what it sees in its own row, at its own position: the NLL of each
meta-experience and its gradient are those of its own row, up to rounding, with the prefix's gradient the sum of
what each row gives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")  # that take a custom 4D attention mask as given


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
        alone = _pack([context], [target])
        if packs:
            grown = _pack(packs[-1].contexts + [context], packs[-1].targets + [target])
            if grown.length <= max_tokens and grown.length < packs[-1].length + alone.length:
                packs[-1] = grown
                continue
        packs.append(alone)
    return packs


def _pack(contexts: list[list[int]], targets: list[list[int]]) -> Pack:
    shared = min(common_prefix_length(contexts), min(map(len, contexts)) - 1)
    return Pack(shared, contexts, targets)


def packed_batch(packs: list[Pack], device, additive_dtype: torch.dtype | None = None) -> dict:
    """One row holding `packs` one after another. Returns `input_ids` and `position_ids` (1, T), a 4D
    `attention_mask` (1, 1, T, T), boolean or, with `additive_dtype`, additive; `logit_positions` (N,) whose logits
    predict `targets` (1, N); and `segment` (N,), the meta-experience each target belongs to, numbered across the
    packs in order."""
    ids: list[int] = []
    positions: list[int] = []
    owner: list[int] = []  # the prefix or segment each token belongs to, numbered in order of appearance
    prefix_of: list[int] = []  # the owner number of the prefix each token's segment sees
    logit_positions: list[int] = []
    targets: list[int] = []
    segment: list[int] = []
    owners = meta_experiences = 0
    for group in packs:
        prefix_owner, owners = owners, owners + 1
        ids += group.contexts[0][:group.prefix_length]
        positions += range(group.prefix_length)
        owner += [prefix_owner] * group.prefix_length
        prefix_of += [prefix_owner] * group.prefix_length
        for context, target in zip(group.contexts, group.targets):
            rest = context[group.prefix_length:] + target
            first_target = len(ids) + len(context) - group.prefix_length
            ids += rest
            positions += range(group.prefix_length, group.prefix_length + len(rest))
            owner += [owners] * len(rest)
            prefix_of += [prefix_owner] * len(rest)
            logit_positions += range(first_target - 1, first_target - 1 + len(target))
            segment += [meta_experiences] * len(target)
            targets += target
            owners += 1
            meta_experiences += 1
    mask = segment_attention_mask(torch.tensor(owner), torch.tensor(prefix_of), additive_dtype)
    return {
        "input_ids": torch.tensor([ids], device=device),
        "position_ids": torch.tensor([positions], device=device),
        "attention_mask": mask.to(device),
        "logit_positions": torch.tensor(logit_positions, device=device),
        "targets": torch.tensor([targets], device=device),
        "segment": torch.tensor(segment, device=device),
    }


def segment_attention_mask(owner: torch.Tensor, prefix_of: torch.Tensor,
                           additive_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(1, 1, T, T) mask: query q sees key k <= q when k belongs to q's own prefix or segment (`owner`), or to the
    prefix q's segment continues (`prefix_of`). Boolean (True: seen), or additive of `additive_dtype`."""
    length = owner.numel()
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    visible = causal & ((owner.unsqueeze(1) == owner.unsqueeze(0)) | (prefix_of.unsqueeze(1) == owner.unsqueeze(0)))
    if additive_dtype is not None:
        visible = torch.zeros(length, length, dtype=additive_dtype).masked_fill(~visible,
                                                                                torch.finfo(additive_dtype).min)
    return visible[None, None]


def segment_mean_nll(token_logps: torch.Tensor, segment: torch.Tensor, segments: int) -> torch.Tensor:
    """(segments,) mean negative log-likelihood of each segment's tokens, from (N,) `token_logps`."""
    sums = torch.zeros(segments, dtype=token_logps.dtype, device=token_logps.device).index_add(0, segment,
                                                                                               -token_logps)
    counts = torch.bincount(segment, minlength=segments).clamp(min=1)
    return sums / counts
