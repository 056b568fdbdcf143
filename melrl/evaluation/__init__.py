"""Evaluation: Pass@1 (greedy), Avg@k and Pass@k on AIME24, AIME25, AMC23, MATH500, OlympiadBench, GSM8K and
Minerva-Math (`evaluate`, `melrl eval`), side-by-side tables (`compare`), validation during training
(`ValidationCallback`), a MEL run's kept meta-experiences in context (`ExperienceBank`, `evaluate(experiences=...)`).

`pass_at_k` and the table functions are light; `evaluate` and `ValidationCallback` import torch and transformers
on first use.
"""

from importlib import import_module

from melrl.evaluation.metrics import average_metrics, benchmark_metrics, pass_at_k
from melrl.evaluation.tables import compare, markdown_table

_LAZY = {
    "evaluate": "melrl.evaluation.runner",
    "load_problems": "melrl.evaluation.runner",
    "sample_seed": "melrl.evaluation.runner",
    "BENCHMARKS": "melrl.evaluation.runner",
    "PAPER_BENCHMARKS": "melrl.evaluation.runner",
    "ValidationCallback": "melrl.evaluation.validation",
    "flat_metrics": "melrl.evaluation.validation",
    "TransformersBackend": "melrl.evaluation.backends",
    "VLLMBackend": "melrl.evaluation.backends",
    "ExperienceBank": "melrl.evaluation.bank",
}

__all__ = sorted(["pass_at_k", "benchmark_metrics", "average_metrics", "compare", "markdown_table", *_LAZY])


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'melrl.evaluation' has no attribute {name!r}")
