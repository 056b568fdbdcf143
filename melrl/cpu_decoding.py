"""Faster decoding on CPU: multiply few-row activations in the weight-major order MKL handles well.

A decode step multiplies one row per sequence by every weight matrix. `F.linear(x, W)` computes x @ W^T; for a
handful of rows MKL reads W slowly that way (row by row for 1-3 rows over a multiple of 4, and through a slower
kernel otherwise), while the same product written as (W @ x^T)^T streams W once at memory speed. On 2 cores,
SmolLM2-135M's 49152 x 576 output layer takes 33 ms as `F.linear` and 4.7 ms weight-major for 3 rows, and a
whole decode step of 3 sequences 126 vs 57 ms at a 700-token context; from 8 sequences on `F.linear` is as
fast or faster there (`benchmarks/decode_batch.py` times both ways). While `fast_cpu_decoding` is active, every
float32 `nn.Linear` of the model computes inputs of at most `MAX_ROWS` rows weight-major. Prompts, the KV cache
and sampling are untouched; results equal `F.linear`'s up to rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

MAX_ROWS = 4  # decode steps of up to this many sequences; larger batches and prefills keep F.linear


def weight_major_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed as (weight @ rows^T)^T when x has at most `MAX_ROWS` rows."""
    rows = x.numel() // x.size(-1)
    if rows > MAX_ROWS:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.size(-1))
    if rows == 1:  # one column would send MKL to its slower matrix-vector routine
        flat = F.pad(flat, (0, 0, 0, 1))
    out = torch.mm(weight, flat.t()).t()[:rows].contiguous()  # a transposed view would slow attention down
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.size(0))


def applies_to(model: torch.nn.Module) -> bool:
    """True where it helps: a model on CPU and a torch built with MKL."""
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cpu" and torch.backends.mkl.is_available()


@contextmanager
def fast_cpu_decoding(model: torch.nn.Module, sequences: int, enabled: bool = True):
    """Route the model's float32 `nn.Linear` layers through `weight_major_linear` while the block decodes
    `sequences` sequences together; nothing is installed for more than `MAX_ROWS`."""
    if not (enabled and sequences <= MAX_ROWS and applies_to(model)):
        yield
        return
    patched = []
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32 and "forward" not in vars(module):
            module.forward = _weight_major_forward.__get__(module)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _weight_major_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return weight_major_linear(x, self.weight, self.bias)
