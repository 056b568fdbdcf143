"""A cache layer that writes each decode step into spare room instead of concatenating."""

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

import melrl.shared_prefix as shared_prefix
from melrl.kv_cache import SPARE_TOKENS, GrowingLayer, growing_cache
from melrl.models import load_model_and_tokenizer
from melrl.shared_prefix import shared_prefix_generation

BATCH, HEADS, DIM = 3, 2, 4


def states(tokens, seed):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH, HEADS, tokens, DIM, generator=generator),
            torch.randn(BATCH, HEADS, tokens, DIM, generator=generator))


def both_layers():
    return DynamicLayer(), GrowingLayer()


def update_both(plain, growing, tokens, seed):
    expected = plain.update(*states(tokens, seed))
    got = growing.update(*states(tokens, seed))
    for want, have in zip(expected, got):
        assert torch.equal(want, have)


def test_holds_what_a_dynamic_layer_holds_through_prefill_and_many_decode_steps():
    plain, growing = both_layers()
    update_both(plain, growing, 50, seed=0)
    for step in range(3 * SPARE_TOKENS):  # enough steps to outgrow the first buffer
        update_both(plain, growing, 1, seed=step + 1)
    assert growing.get_seq_length() == plain.get_seq_length() == 50 + 3 * SPARE_TOKENS


def test_decode_steps_write_into_the_same_buffer_until_it_is_full():
    growing = GrowingLayer()
    growing.update(*states(10, seed=0))
    capacity, address = growing.capacity(), growing.keys.data_ptr()
    assert capacity >= 10 + SPARE_TOKENS
    for step in range(capacity - 10):
        growing.update(*states(1, seed=step + 1))
        assert growing.keys.data_ptr() == address
    growing.update(*states(1, seed=0))
    assert growing.keys.data_ptr() != address and growing.capacity() > capacity


def test_spare_room_is_bounded():
    growing = GrowingLayer()
    growing.update(*states(4000, seed=0))
    assert growing.capacity() <= 4000 + max(SPARE_TOKENS, 4000 // 8)


@pytest.mark.parametrize("change", ["crop", "select rows", "repeat rows", "reset"])
def test_states_changed_from_outside_are_taken_over(change):
    plain, growing = both_layers()
    update_both(plain, growing, 20, seed=0)
    update_both(plain, growing, 1, seed=1)
    for layer in (plain, growing):
        if change == "crop":
            layer.crop(-5)
        elif change == "select rows":
            layer.batch_select_indices(torch.tensor([2, 0, 2]))
        elif change == "repeat rows":
            layer.batch_repeat_interleave(1)
        else:
            layer.reset()
    for step in range(4):
        update_both(plain, growing, 1, seed=step + 2)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    return model.eval()


def test_a_filled_dynamic_cache_keeps_its_states_when_it_grows(model):
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.arange(5, 25).unsqueeze(0), past_key_values=cache, use_cache=True)
    before = [layer.keys.clone() for layer in cache.layers]
    growing_cache(cache)
    assert all(type(layer) is GrowingLayer for layer in cache.layers)
    assert all(torch.equal(layer.keys, keys) for layer, keys in zip(cache.layers, before))


@pytest.mark.parametrize("rows", [[30], [30, 12]])
def test_generation_decodes_into_growing_layers_and_samples_what_plain_generation_samples(model, rows, monkeypatch):
    monkeypatch.setattr(shared_prefix, "prefill", lambda *a: pytest.fail("nothing here is shared"))
    width = max(rows)
    ids = torch.stack([torch.cat([torch.zeros(width - n, dtype=torch.long), torch.arange(7 + i, 7 + i + n)])
                       for i, n in enumerate(rows)])
    mask = (torch.arange(width) >= width - torch.tensor(rows).unsqueeze(1)).long()
    settings = dict(max_new_tokens=SPARE_TOKENS + 20, min_new_tokens=SPARE_TOKENS + 20, do_sample=True, top_k=0,
                    pad_token_id=0, return_dict_in_generate=True)
    seen = []
    original = GrowingLayer.update
    monkeypatch.setattr(GrowingLayer, "update", lambda self, *a, **k: seen.append(1) or original(self, *a, **k))
    with torch.no_grad():
        torch.manual_seed(0)
        plain = model.generate(input_ids=ids, attention_mask=mask, **settings)
        assert not seen
        with shared_prefix_generation(model):
            torch.manual_seed(0)
            grown = model.generate(input_ids=ids, attention_mask=mask, **settings)
    assert isinstance(grown.past_key_values.layers[0], GrowingLayer) and seen
    assert torch.equal(grown.sequences, plain.sequences)
