"""Generation with the rows' shared prompt prefix prefilled once."""

import pytest
import torch

import melrl.shared_prefix as shared_prefix
from melrl.models import load_model_and_tokenizer
from melrl.shared_prefix import MIN_SHARED_TOKENS, shared_prefix_generation, shared_prefix_layout

PAD = 0


def left_padded(rows):
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def rows_with_prefix(prefix_length, suffix_lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    prefix = torch.randint(5, 400, (prefix_length,), generator=generator).tolist()
    return [prefix + torch.randint(5, 400, (n,), generator=generator).tolist() for n in suffix_lengths]


def test_layout_puts_padding_between_the_shared_prefix_and_each_rest():
    rows = rows_with_prefix(MIN_SHARED_TOKENS + 3, [4, 1, 7])
    ids, mask = left_padded(rows)
    prefix, new_ids, new_mask = shared_prefix_layout(ids, mask, pad_id=PAD)
    assert prefix.tolist() == [rows[0][:MIN_SHARED_TOKENS + 3]]
    assert new_ids.shape == ids.shape and new_mask.shape == mask.shape
    for row, r in enumerate(rows):
        assert new_ids[row][new_mask[row].bool()].tolist() == r
        assert new_mask[row, :prefix.size(1)].all()
        gap = ids.size(1) - len(r)
        assert not new_mask[row, prefix.size(1):prefix.size(1) + gap].any()


def test_layout_leaves_every_row_a_token_after_the_prefix():
    rows = rows_with_prefix(MIN_SHARED_TOKENS + 5, [0, 3])  # the first row is all prefix
    prefix, ids, mask = shared_prefix_layout(*left_padded(rows), pad_id=PAD)
    assert prefix.size(1) == MIN_SHARED_TOKENS + 4
    assert mask[:, -1].all()


@pytest.mark.parametrize("case", ["short prefix", "one row", "right padding", "no common start"])
def test_layout_refuses_what_sharing_cannot_serve(case):
    rows = rows_with_prefix(MIN_SHARED_TOKENS + 2, [3, 5])
    if case == "short prefix":
        rows = rows_with_prefix(MIN_SHARED_TOKENS - 1, [3, 5])
    if case == "one row":
        rows = rows[:1]
    if case == "no common start":
        rows[1][0] += 1
    ids, mask = left_padded(rows)
    if case == "right padding":
        ids, mask = ids.flip(1), mask.flip(1)
    assert shared_prefix_layout(ids, mask, pad_id=PAD) is None


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    return model.eval()


def generate_both_ways(model, rows, **kwargs):
    ids, mask = left_padded(rows)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, output_scores=True,
                    return_dict_in_generate=True) | kwargs
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=mask, **settings)
        with shared_prefix_generation(model):
            shared = model.generate(input_ids=ids, attention_mask=mask, **settings)
    return ids.size(1), plain, shared


def test_generation_equals_plain_generation_and_prefills_the_prefix_once(model, monkeypatch):
    calls = []
    original = shared_prefix.prefill
    monkeypatch.setattr(shared_prefix, "prefill", lambda m, prefix: calls.append(prefix.shape) or original(m, prefix))
    rows = rows_with_prefix(40, [3, 9, 1])
    width, plain, shared = generate_both_ways(model, rows)
    assert calls == [(1, 40)]
    assert torch.equal(shared.sequences[:, width:], plain.sequences[:, width:])
    torch.testing.assert_close(torch.stack(shared.scores), torch.stack(plain.scores), rtol=1e-4, atol=1e-4)
    assert "generate" not in vars(model)


def test_without_a_shared_prefix_generation_is_plain(model, monkeypatch):
    monkeypatch.setattr(shared_prefix, "prefill", lambda *a: pytest.fail("prefilled without a shared prefix"))
    rows = rows_with_prefix(MIN_SHARED_TOKENS + 4, [3, 2])
    rows[1][0] += 1
    width, plain, shared = generate_both_ways(model, rows)
    assert torch.equal(shared.sequences, plain.sequences)


def test_extra_generate_arguments_and_static_caches_go_to_plain_generation(model, monkeypatch):
    monkeypatch.setattr(shared_prefix, "prefill", lambda *a: pytest.fail("prefilled despite an unsupported setting"))
    rows = rows_with_prefix(MIN_SHARED_TOKENS + 4, [3, 2])
    generate_both_ways(model, rows, num_return_sequences=2, do_sample=True)
    generate_both_ways(model, rows, cache_implementation="static")


def test_generate_is_restored_even_on_error(model):
    with pytest.raises(RuntimeError), shared_prefix_generation(model):
        raise RuntimeError("boom")
    assert "generate" not in vars(model)
