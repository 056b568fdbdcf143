"""Packed NLL rows: grouping, layout, mask, and the same NLL and gradients as one row per meta-experience."""

import pytest
import torch

from melrl.algorithms import sequence_mean_nll
from melrl.models import load_model_and_tokenizer
from melrl.nll_packing import (
    common_prefix_length,
    pack,
    packable,
    packed_attention,
    packed_batch,
    packed_nll,
    segment_mean_nll,
)

PREFIX = list(range(100, 140))


def contexts_and_targets():
    contexts = [PREFIX + [7, 8, 9], PREFIX + [7, 10], PREFIX[:30] + [11, 12, 13, 14], [15, 16, 17]]
    targets = [[20, 21, 2], [22, 2], [23, 24, 25, 2], [26, 27, 2]]
    return contexts, targets


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2], [1, 2]]) == 2
    assert common_prefix_length([[1], [2]]) == 0


def test_packs_group_in_order_up_to_the_token_limit_and_share_the_common_prefix():
    contexts, targets = contexts_and_targets()
    packs = pack(contexts, targets, max_tokens=60)
    assert [p.contexts for p in packs] == [contexts[:2], contexts[2:3], contexts[3:]]
    assert packs[0].prefix_length == 41  # the instruction and the 7 both continue with
    assert packs[0].length == 41 + (2 + 3) + (1 + 2)
    # the third shares 30 tokens with the second, but joining would leave 30 of the 41 shared: a pack of its own
    assert [p.prefix_length for p in packs[1:]] == [len(contexts[2]) - 1, len(contexts[3]) - 1]
    packs = pack(contexts, targets, max_tokens=45)
    assert [p.contexts for p in packs] == [[c] for c in contexts]
    packs = pack(contexts[1:3], targets[1:3], max_tokens=100)
    assert len(packs) == 1 and packs[0].prefix_length == 30


def test_a_context_that_is_the_prefix_of_another_keeps_its_last_token_in_its_segment():
    packs = pack([[1, 2, 3], [1, 2, 3, 4]], [[5], [6]], max_tokens=100)
    assert packs[0].prefix_length == 2
    batch = packed_batch(packs, "cpu")
    ids, positions = batch["input_ids"][0], batch["logit_positions"]
    assert ids[positions + 1].tolist() == [5, 6]


def test_packed_batch_layout():
    contexts, targets = contexts_and_targets()
    packs = pack(contexts, targets, max_tokens=60)
    batch = packed_batch(packs, "cpu")
    ids, positions = batch["input_ids"][0].tolist(), batch["position_ids"][0].tolist()
    expected = (PREFIX + [7] + [8, 9] + targets[0] + [10] + targets[1]
                + contexts[2][:-1] + contexts[2][-1:] + targets[2] + contexts[3][:-1] + contexts[3][-1:] + targets[3])
    assert ids == expected
    assert positions[:41] == list(range(41))
    assert positions[41:46] == list(range(41, 46))  # the first segment continues the prefix
    assert positions[46:49] == list(range(41, 44))  # and so does the second
    assert positions[49:] == list(range(len(contexts[2]) + 4)) + list(range(len(contexts[3]) + 3))
    assert batch["targets"][0].tolist() == sum(targets, [])
    assert batch["input_ids"][0][batch["logit_positions"] + 1].tolist() == sum(targets, [])
    assert batch["segment"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3]


def test_layout_gives_each_pack_its_prefix_and_segments_in_row_order():
    packs = pack([[1, 2, 3], [1, 2, 4]], [[5], [6]], max_tokens=100) + pack([[7, 8]], [[9]], max_tokens=100)
    batch = packed_batch(packs, "cpu")
    assert batch["input_ids"][0].tolist() == [1, 2, 3, 5, 4, 6, 7, 8, 9]
    assert batch["layout"] == [(0, 2, [(2, 2), (4, 2)]), (6, 1, [(7, 2)])]


def test_packability_follows_the_attention_of_the_model():
    from transformers import LlamaConfig, Qwen2Config

    def config(cls, implementation="sdpa", **kwargs):
        made = cls(**kwargs)
        made._attn_implementation = implementation
        return made

    assert packable(config(LlamaConfig)) and packable(config(LlamaConfig, "eager"))
    assert not packable(config(LlamaConfig, "flash_attention_2"))
    assert packable(config(Qwen2Config, use_sliding_window=False))
    assert not packable(config(Qwen2Config, use_sliding_window=True, sliding_window=64, max_window_layers=0))


def test_segment_mean_nll():
    logps = torch.tensor([-1.0, -3.0, -2.0, -4.0, -6.0])
    assert segment_mean_nll(logps, torch.tensor([0, 0, 1, 2, 2]), 3).tolist() == [2.0, 2.0, 5.0]


def one_row_each(model, contexts, targets):
    nlls = []
    for context, target in zip(contexts, targets):
        ids = torch.tensor([context + target])
        logits = model(input_ids=ids, logits_to_keep=len(target) + 1).logits[:, :-1]
        nlls.append(sequence_mean_nll(logits, torch.tensor([target]), torch.ones(1, len(target)))[0])
    return torch.stack(nlls)


def packed(model, contexts, targets, max_tokens):
    batch = packed_batch(pack(contexts, targets, max_tokens), "cpu")
    with packed_attention(model):
        return packed_nll(model, batch)


def gradients(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_nll_and_gradients_equal_one_row_per_meta_experience(tiny_model_dir, implementation, checkpointing):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    model.set_attn_implementation(implementation)
    if checkpointing:  # the backward pass recomputes each layer: within `packed_attention` too
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    contexts, targets = contexts_and_targets()
    alone = one_row_each(model, contexts, targets)
    together = packed(model, contexts, targets, max_tokens=60)  # 3 packs in one row
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    assert model.config._attn_implementation == implementation
    weights = torch.tensor([1.0, 0.5, 2.0, 0.0])
    expected = gradients(model, (one_row_each(model, contexts, targets) * weights).sum())
    with packed_attention(model):
        got = gradients(model, (packed(model, contexts, targets, 60) * weights).sum())
    assert got.keys() == expected.keys() and got
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_segment_attention_refuses_a_pass_without_layout(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    with packed_attention(model), pytest.raises(ValueError, match="packed NLL rows"):
        model(input_ids=torch.tensor([[5, 6, 7]]))
