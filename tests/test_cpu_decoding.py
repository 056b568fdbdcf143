"""Weight-major linear products during CPU decoding."""

import pytest
import torch

from melrl.cpu_decoding import MAX_ROWS, fast_cpu_decoding, weight_major_linear


@pytest.mark.parametrize("shape", [(1, 8), (3, 8), (2, 1, 8), (7, 1, 8), (2, 3, 8), (MAX_ROWS + 1, 8), (4, 40, 8)])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_major_linear_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    x, weight = torch.randn(*shape), torch.randn(5, 8)
    b = torch.randn(5) if bias else None
    out = weight_major_linear(x, weight, b)
    assert out.shape == (*shape[:-1], 5)
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, b))


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5, bias=False))


def test_model_runs_weight_major_inside_the_block_and_plainly_after(monkeypatch):
    import melrl.cpu_decoding as cpu_decoding

    calls = []
    original = cpu_decoding.weight_major_linear
    monkeypatch.setattr(cpu_decoding, "weight_major_linear", lambda *a: calls.append(1) or original(*a))
    model, x = small_model(), torch.randn(3, 1, 8)
    expected = model(x)
    with fast_cpu_decoding(model, sequences=3):
        torch.testing.assert_close(model(x), expected)
    assert len(calls) == 2  # both linear layers
    model(x)
    assert len(calls) == 2 and not any("forward" in vars(m) for m in model)


def test_forward_is_restored_even_on_error():
    model = small_model()
    with pytest.raises(RuntimeError), fast_cpu_decoding(model, sequences=1):
        assert all("forward" in vars(m) for m in model if isinstance(m, torch.nn.Linear))
        raise RuntimeError("stop")
    assert not any("forward" in vars(m) for m in model)


def test_disabled_large_batch_or_non_float32_layers_are_left_alone():
    model = small_model()
    with fast_cpu_decoding(model, sequences=2, enabled=False):
        assert not any("forward" in vars(m) for m in model)
    with fast_cpu_decoding(model, sequences=MAX_ROWS + 1):
        assert not any("forward" in vars(m) for m in model)
    model = small_model().to(torch.bfloat16)
    with fast_cpu_decoding(model, sequences=2):
        assert not any("forward" in vars(m) for m in model)
