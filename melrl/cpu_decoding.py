"""Faster few-sequence decoding on CPU: give MKL matrix products a row count it handles well.

A decode step multiplies one row per sequence by every weight matrix. MKL computes a product with 2, 3, 6, 7,
10 or 11 rows partly row by row, reading the weight matrix once per leftover row: on 2 cores SmolLM2-135M's
49152 x 576 output layer takes 34 ms for 3 rows and 18 ms for 4 (`benchmarks/decode_batch.py`, and the
`--rows` table of the same script). MEL's analysis and replay phases decode a handful of sequences, so while
`padded_linear_rows` is active every float32 `nn.Linear` of the model pads such inputs with zero rows up to the
next multiple of 4 and drops the extra output rows. Only the activations are padded: prompts, the KV cache and
sampling are untouched, and the results are those of the unpadded product up to rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

ROW_BLOCK = 4
LARGEST_SLOW_ROWS = 11  # from 12 rows on, MKL blocks every row count about equally well


def padded_rows(rows: int) -> int:
    """The row count to multiply instead of `rows`."""
    if rows <= LARGEST_SLOW_ROWS and rows % ROW_BLOCK in (2, 3):
        return rows + (-rows % ROW_BLOCK)
    return rows


def applies_to(model: torch.nn.Module) -> bool:
    """True where the padding helps: a model on CPU and a torch built with MKL."""
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cpu" and torch.backends.mkl.is_available()


@contextmanager
def padded_linear_rows(model: torch.nn.Module, sequences: int, enabled: bool = True):
    """Pad the inputs of the model's float32 linear layers to `padded_rows` while `sequences` sequences are
    decoded together in the block. Nothing is installed where padding would not change the row count."""
    if not (enabled and padded_rows(sequences) != sequences and applies_to(model)):
        yield
        return
    pending: dict[int, tuple[torch.Size, int]] = {}

    def pad_input(module, args):
        x = args[0]
        rows = x.numel() // x.size(-1)
        target = padded_rows(rows)
        if target == rows:
            return None
        pending[id(module)] = (x.shape, rows)
        return (F.pad(x.reshape(rows, x.size(-1)), (0, 0, 0, target - rows)), *args[1:])

    def unpad_output(module, args, output):
        shape = pending.pop(id(module), None)
        if shape is None:
            return None
        input_shape, rows = shape
        return output[:rows].reshape(*input_shape[:-1], output.size(-1))

    handles = []
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32:
            handles += [module.register_forward_pre_hook(pad_input), module.register_forward_hook(unpad_output)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
