"""Faster decoding on CPU: multiply few-row activations in the weight-major order where MKL handles it better.

A decode step multiplies one row per sequence by every weight matrix. `F.linear(x, W)` computes x @ W^T; on some
CPUs MKL reads W slowly that way for a handful of rows (row by row for 1-3 rows over a multiple of 4, and through a
slower kernel otherwise), while the same product written as (W @ x^T)^T streams W once at memory speed. On such a
host with 2 cores, SmolLM2-135M's 49152 x 576 output layer takes 33 ms as `F.linear` and 4.7 ms weight-major for 3
rows; on a host with AMX and AVX-512 FP16, 3.8 ms as `F.linear` and 8.8 ms weight-major
(`benchmarks/decode_batch.py` times both ways). So the order is chosen by measurement: the first time a weight
shape meets a number of rows on a host, `weight_major_pays` times both products on that shape and keeps the answer
in `<cache dir>/cpu_decoding.json`, so that every later run on the host multiplies in the same order and a run
with the same seed samples the same tokens (the orders round differently). While `fast_cpu_decoding` is active,
every float32 `nn.Linear` of the model computes inputs of at most `MAX_ROWS` rows in the order that won. Prompts,
the KV cache and sampling are untouched; results equal `F.linear`'s up to rounding.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from .models import cache_dir

logger = logging.getLogger("melrl.cpu_decoding")

MAX_ROWS = 4  # decode steps of up to this many sequences; larger batches and prefills keep F.linear
REQUIRED_SPEEDUP = 1.2  # below it the orders are a wash, and a choice flipping between runs would cost nothing
TIMING_SECONDS = 0.02  # per order and shape, once per host
DECISIONS_FILE = "cpu_decoding.json"

_decisions: dict[str, bool] | None = None  # this host's answers, read from the cache once per process
_answers: dict[tuple, bool] = {}  # the same answers by shape, as the layers ask


def weight_major_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed as (weight @ rows^T)^T."""
    rows = x.numel() // x.size(-1)
    flat = x.reshape(rows, x.size(-1))
    if rows == 1:  # one column would send MKL to its slower matrix-vector routine
        flat = F.pad(flat, (0, 0, 0, 1))
    out = torch.mm(weight, flat.t()).t()[:rows].contiguous()  # a transposed view would slow attention down
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.size(0))


def product_seconds(product, x: torch.Tensor, weight: torch.Tensor) -> float:
    """Median seconds of one `product(x, weight, None)` on this host, with torch's current thread count."""
    timer = Timer("product(x, weight, None)", globals={"product": product, "x": x, "weight": weight},
                  num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=TIMING_SECONDS).median


def weight_major_pays(weight: torch.Tensor, rows: int) -> bool:
    """Whether the weight-major product of `rows` rows beats `F.linear` by `REQUIRED_SPEEDUP` on this weight's shape;
    timed on random rows the first time a shape, row count and thread count meet on this host, then remembered."""
    threads = torch.get_num_threads()
    answer = _answers.get((weight.shape, weight.dtype, rows, threads))
    if answer is None:  # called for every layer of every decode step: only a first meeting may read or time
        answer = _saved_or_timed_answer(weight, rows, threads)
        _answers[(weight.shape, weight.dtype, rows, threads)] = answer
    return answer


def _saved_or_timed_answer(weight: torch.Tensor, rows: int, threads: int) -> bool:
    global _decisions
    if _decisions is None:
        _decisions = _read_decisions()
    key = (f"{cpu_name()} | torch {torch.__version__} | {threads} threads | {weight.dtype} | "
           f"{weight.size(0)}x{weight.size(1)} | {rows} rows")
    if key not in _decisions:
        with torch.no_grad():
            # its own generator: timing must leave the sampling stream as it was
            x = torch.randn(rows, weight.size(1), dtype=weight.dtype, generator=torch.Generator().manual_seed(0))
            plain = product_seconds(F.linear, x, weight)
            weight_major = product_seconds(weight_major_product, x, weight.detach())
        _decisions[key] = weight_major * REQUIRED_SPEEDUP < plain
        _write_decisions(_decisions)
    return _decisions[key]


def cpu_name() -> str:
    """The processor's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_decisions() -> dict[str, bool]:
    path = cache_dir() / DECISIONS_FILE
    try:
        decisions = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("ignoring %s (%s); the multiplication orders will be timed again", path, error)
        return {}
    if not isinstance(decisions, dict) or not all(isinstance(v, bool) for v in decisions.values()):
        logger.warning("ignoring %s: not an object of true/false answers; the orders will be timed again", path)
        return {}
    return decisions


def _write_decisions(decisions: dict[str, bool]) -> None:
    path = cache_dir() / DECISIONS_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial_path = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial_path.write_text(json.dumps(decisions, indent=1, sort_keys=True))
        os.replace(partial_path, path)
    except OSError as error:  # a read-only cache costs a timing per process, nothing else
        logger.warning("could not save %s (%s)", path, error)


def weight_major_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        measure: bool = True) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, computed weight-major when x has at most `MAX_ROWS` rows and, with `measure`,
    that order is the faster one here (`weight_major_pays`)."""
    rows = x.numel() // x.size(-1)
    if rows > MAX_ROWS or (measure and not weight_major_pays(weight, rows)):
        return F.linear(x, weight, bias)
    return weight_major_product(x, weight, bias)


def applies_to(model: torch.nn.Module) -> bool:
    """True where it can help: a model on CPU and a torch built with MKL."""
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cpu" and torch.backends.mkl.is_available()


@contextmanager
def fast_cpu_decoding(model: torch.nn.Module, sequences: int, enabled: bool = True, measure: bool = True):
    """Route the model's float32 `nn.Linear` layers through `weight_major_linear` while the block decodes
    `sequences` sequences together; nothing is installed for more than `MAX_ROWS`, nor on a layer whose shape
    multiplies faster with `F.linear` for every row count up to `MAX_ROWS` (the wrapper would only cost a Python
    call). `measure=False` multiplies weight-major without timing which order is faster (to compare the two)."""
    if not (enabled and sequences <= MAX_ROWS and applies_to(model)):
        yield
        return
    patched = []
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32 and "forward" not in vars(module):
            if measure and not any(weight_major_pays(module.weight, rows) for rows in range(1, MAX_ROWS + 1)):
                continue
            module.forward = partial(_weight_major_forward, module, measure)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _weight_major_forward(module: torch.nn.Linear, measure: bool, x: torch.Tensor) -> torch.Tensor:
    return weight_major_linear(x, module.weight, module.bias, measure)


@contextmanager
def without_mixed_precision(model: torch.nn.Module):
    """Within, a model on CPU runs its own forward, without the autocast that accelerate wraps it in under
    `bf16`/`fp16` mixed precision: autocast casts every weight afresh at each forward call, and generation makes one
    call per token, so on a CPU the casts cost more than the lower precision saves. Generation then computes in
    the weights' own dtype."""
    original = vars(model).get("_original_forward")
    parameter = next(model.parameters(), None)
    if original is None or parameter is None or parameter.device.type != "cpu":
        yield
        return
    wrapped = vars(model)["forward"]
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped
