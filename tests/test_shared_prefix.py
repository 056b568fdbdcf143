"""Generation with what the rows' prompts share (a common prefix, repeated prompts) prefilled once."""

import pytest
import torch

import melrl.shared_prefix as shared_prefix
from melrl.models import load_model_and_tokenizer
from melrl.shared_prefix import MIN_SHARED_TOKENS, shared_prefill_plan, shared_prefix_generation, shared_prefix_layout

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


def test_plan_prefills_each_distinct_prompt_once_and_maps_rows_back():
    first, second = rows_with_prefix(0, [MIN_SHARED_TOKENS + 2, 5], seed=1)
    rows = [first, second, first, second, first]
    ids, mask = left_padded(rows)
    plan = shared_prefill_plan(ids, mask, pad_id=PAD)
    assert plan.prefix.size(1) == 0 and plan.distinct_ids.size(0) == 2
    assert torch.equal(plan.input_ids, ids) and torch.equal(plan.attention_mask, mask)
    assert plan.rows.tolist()[:2] == plan.rows.tolist()[2:4] and plan.rows[0] != plan.rows[1]


def test_plan_shares_the_common_prefix_of_the_distinct_prompts():
    rows = rows_with_prefix(MIN_SHARED_TOKENS + 1, [3, 6])
    ids, mask = left_padded([rows[0], rows[1], rows[1]])
    plan = shared_prefill_plan(ids, mask, pad_id=PAD)
    assert plan.prefix.tolist() == [rows[0][:MIN_SHARED_TOKENS + 1]] and plan.distinct_ids.size(0) == 2
    for row, r in enumerate([rows[0], rows[1], rows[1]]):
        assert plan.input_ids[row][plan.attention_mask[row].bool()].tolist() == r


@pytest.mark.parametrize("case", ["too few repeated tokens", "all distinct, no common start", "right padding"])
def test_plan_refuses_what_is_not_worth_a_forward_pass(case):
    short = torch.arange(5, 5 + MIN_SHARED_TOKENS // 2).tolist()
    rows = {"too few repeated tokens": [short, short, [7, 8]],
            "all distinct, no common start": rows_with_prefix(0, [40, 41, 42]),
            "right padding": [short * 3, short * 3, [7]]}[case]
    ids, mask = left_padded(rows)
    if case == "right padding":
        ids, mask = ids.flip(1), mask.flip(1)
    assert shared_prefill_plan(ids, mask, pad_id=PAD) is None


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


@pytest.mark.parametrize("prefix_length", [0, 40])
def test_repeated_prompts_are_prefilled_once_and_generate_as_plain(model, prefix_length):
    first, second = rows_with_prefix(prefix_length, [MIN_SHARED_TOKENS + 3, 9], seed=2)
    rows = [first, first, first, second, second, second]
    shapes = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
    try:
        width, plain, shared = generate_both_ways(model, rows)
    finally:
        hook.remove()
    plain_calls = [(6, width)] + [(6, 1)] * 5  # 6 new tokens: the prompt, then one token at a time
    prefix = [(1, prefix_length)] if prefix_length else []
    assert shapes == plain_calls + prefix + [(2, width - 1 - prefix_length)] + [(6, 1)] * 6
    assert torch.equal(shared.sequences[:, width:], plain.sequences[:, width:])
    torch.testing.assert_close(torch.stack(shared.scores), torch.stack(plain.scores), rtol=1e-4, atol=1e-4)


def test_sampled_repeats_draw_what_plain_generation_draws(model):
    first, second = rows_with_prefix(0, [MIN_SHARED_TOKENS + 3, 9], seed=3)
    ids, mask = left_padded([first, second] * 4)
    settings = dict(max_new_tokens=8, do_sample=True, top_k=0, temperature=1.0, pad_token_id=PAD)
    with torch.no_grad():
        torch.manual_seed(0)
        plain = model.generate(input_ids=ids, attention_mask=mask, **settings)
        with shared_prefix_generation(model):
            torch.manual_seed(0)
            shared = model.generate(input_ids=ids, attention_mask=mask, **settings)
    assert torch.equal(shared[:, ids.size(1):], plain[:, ids.size(1):])


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
