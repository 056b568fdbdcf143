"""Weight-major linear products during CPU decoding."""

import json

import pytest
import torch

import melrl.cpu_decoding as cpu_decoding
from melrl.cpu_decoding import MAX_ROWS, fast_cpu_decoding, weight_major_linear, weight_major_pays, weight_major_product


@pytest.mark.parametrize("shape", [(1, 8), (3, 8), (2, 1, 8), (7, 1, 8), (2, 3, 8), (MAX_ROWS + 1, 8), (4, 40, 8)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("product", [weight_major_product, weight_major_linear])
def test_weight_major_products_equal_f_linear(shape, bias, product):
    torch.manual_seed(0)
    x, weight = torch.randn(*shape), torch.randn(5, 8)
    b = torch.randn(5) if bias else None
    out = product(x, weight, b)
    assert out.shape == (*shape[:-1], 5)
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, b))


def forget_answers(monkeypatch):
    """As a new process starts: nothing read from the cache file or remembered yet."""
    monkeypatch.setattr(cpu_decoding, "_decisions", None)
    monkeypatch.setattr(cpu_decoding, "_answers", {})


@pytest.fixture
def timings(monkeypatch, tmp_path):
    """Seconds each product takes, as the test sets them; records what was timed."""
    seconds, timed = {"plain": 1.0, "weight_major": 1.0}, []

    def fake(product, x, weight):
        way = "plain" if product is torch.nn.functional.linear else "weight_major"
        timed.append((way, tuple(x.shape), tuple(weight.shape)))
        return seconds[way]

    monkeypatch.setattr(cpu_decoding, "product_seconds", fake)
    monkeypatch.setenv("MELRL_CACHE_DIR", str(tmp_path))
    forget_answers(monkeypatch)
    return seconds, timed


@pytest.mark.parametrize(("plain", "weight_major", "expected"),
                         [(1.0, 0.5, True), (1.0, 0.9, False), (0.5, 1.0, False)])
def test_weight_major_is_chosen_only_where_it_is_clearly_faster(timings, plain, weight_major, expected):
    seconds, timed = timings
    seconds.update(plain=plain, weight_major=weight_major)
    weight = torch.randn(6, 8)
    assert weight_major_pays(weight, 3) is expected
    assert sorted(timed) == [("plain", (3, 8), (6, 8)), ("weight_major", (3, 8), (6, 8))]
    assert weight_major_pays(torch.randn(6, 8), 3) is expected
    assert len(timed) == 2  # remembered per shape and rows
    weight_major_pays(weight, 2)
    weight_major_pays(torch.randn(5, 8), 3)
    assert len(timed) == 6


def test_answers_are_kept_for_later_runs_on_the_host(timings, monkeypatch, tmp_path, caplog):
    seconds, timed = timings
    seconds.update(plain=1.0, weight_major=0.5)
    assert weight_major_pays(torch.randn(6, 8), 3)
    saved = json.loads((tmp_path / "cpu_decoding.json").read_text())
    assert list(saved.values()) == [True] and "6x8 | 3 rows" in next(iter(saved))
    seconds.update(weight_major=2.0)
    forget_answers(monkeypatch)  # a new process on the same host
    assert weight_major_pays(torch.randn(6, 8), 3)
    assert len(timed) == 2
    (tmp_path / "cpu_decoding.json").write_text("{not json")
    forget_answers(monkeypatch)
    assert not weight_major_pays(torch.randn(6, 8), 3)
    assert len(timed) == 4 and "cpu_decoding.json" in caplog.text
    assert list(json.loads((tmp_path / "cpu_decoding.json").read_text()).values()) == [False]


def test_timing_leaves_the_random_stream_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("MELRL_CACHE_DIR", str(tmp_path))
    forget_answers(monkeypatch)
    weight = torch.randn(6, 8)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    weight_major_pays(weight, 2)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("faster", [True, False])
def test_linear_layers_take_the_order_that_was_measured_faster(timings, monkeypatch, faster):
    seconds, _ = timings
    seconds.update(plain=1.0, weight_major=0.5 if faster else 2.0)
    calls = []
    monkeypatch.setattr(cpu_decoding, "weight_major_product",
                        lambda *a: calls.append(1) or weight_major_product(*a))
    model, x = small_model(), torch.randn(3, 1, 8)
    expected = model(x)
    with fast_cpu_decoding(model, sequences=3):
        torch.testing.assert_close(model(x), expected)
    assert len(calls) == (2 if faster else 0)
    with fast_cpu_decoding(model, sequences=3, measure=False):
        torch.testing.assert_close(model(x), expected)
    assert len(calls) == (4 if faster else 2)


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5, bias=False))


def test_model_runs_weight_major_inside_the_block_and_plainly_after(monkeypatch, timings):
    timings[0].update(plain=1.0, weight_major=0.5)
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


def test_forward_is_restored_even_on_error(timings):
    timings[0].update(plain=1.0, weight_major=0.5)
    model = small_model()
    with pytest.raises(RuntimeError), fast_cpu_decoding(model, sequences=1):
        assert all("forward" in vars(m) for m in model if isinstance(m, torch.nn.Linear))
        raise RuntimeError("stop")
    assert not any("forward" in vars(m) for m in model)


def test_only_layers_whose_shape_multiplies_faster_weight_major_for_some_row_count_are_wrapped(timings, monkeypatch):
    def seconds(product, x, weight):  # weight-major wins only for the first layer's shape, and only at 2 rows
        wins = product is not torch.nn.functional.linear and tuple(weight.shape) == (16, 8) and x.size(0) == 2
        return 0.5 if wins else 1.0

    monkeypatch.setattr(cpu_decoding, "product_seconds", seconds)
    model = small_model()
    x = torch.randn(3, 1, 8)
    expected = model(x)
    with fast_cpu_decoding(model, sequences=1):
        assert ["forward" in vars(m) for m in model] == [True, False, False]
        torch.testing.assert_close(model(x), expected)
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


def test_without_mixed_precision_swaps_the_forward_of_cpu_models_only():
    def wrapped(x):
        return "autocast"

    models = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, device="meta")]
    for model in models:
        model._original_forward, model.forward = model.forward, wrapped  # as accelerate's mixed precision does
    cpu, elsewhere = models
    with cpu_decoding.without_mixed_precision(cpu), cpu_decoding.without_mixed_precision(elsewhere):
        assert cpu(torch.ones(1, 2)).shape == (1, 2)
        assert elsewhere(torch.ones(1, 2)) == "autocast"
    assert cpu(torch.ones(1, 2)) == "autocast"
    with cpu_decoding.without_mixed_precision(torch.nn.Linear(2, 2)):  # no mixed precision: nothing to swap
        pass
