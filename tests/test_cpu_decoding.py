"""Row padding of small linear products during CPU decoding."""

import pytest
import torch

from melrl.cpu_decoding import padded_linear_rows, padded_rows


@pytest.mark.parametrize("rows, expected", [(1, 1), (2, 4), (3, 4), (4, 4), (5, 5), (6, 8), (7, 8), (8, 8), (9, 9),
                                            (10, 12), (11, 12), (12, 12), (14, 14), (15, 15), (35, 35)])
def test_padded_rows_hand_values(rows, expected):
    assert padded_rows(rows) == expected


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))


@pytest.mark.parametrize("shape", [(3, 8), (2, 1, 8), (7, 1, 8), (2, 3, 8), (1, 8)])
def test_padding_keeps_shapes_and_values_and_multiplies_a_block_of_rows(shape):
    model = small_model()
    seen = []
    x = torch.randn(*shape)
    expected = model(x)
    with padded_linear_rows(model, sequences=3):
        # registered after the padding hook, so it sees the rows actually multiplied
        model[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
        padded = model(x)
    rows = x.numel() // x.size(-1)
    assert padded.shape == expected.shape
    torch.testing.assert_close(padded, expected)
    assert seen == [padded_rows(rows)]


def test_hooks_are_removed_after_the_block_even_on_error():
    model = small_model()
    with pytest.raises(RuntimeError), padded_linear_rows(model, sequences=2):
        assert all(len(m._forward_pre_hooks) == 1 for m in model if isinstance(m, torch.nn.Linear))
        raise RuntimeError("stop")
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model)


def test_disabled_unneeded_or_non_float32_padding_installs_nothing():
    model = small_model()
    with padded_linear_rows(model, sequences=3, enabled=False):
        assert not any(m._forward_pre_hooks for m in model)
    for sequences in (1, 4, 5, 16):  # row counts the kernels already handle well
        with padded_linear_rows(model, sequences=sequences):
            assert not any(m._forward_pre_hooks for m in model)
    model = small_model().to(torch.bfloat16)
    with padded_linear_rows(model, sequences=3):
        assert not any(m._forward_pre_hooks for m in model)
