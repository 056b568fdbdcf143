"""melrl: Meta-Experience Learning for LLM reasoning, on TRL.

Names are imported on first use, so that `import melrl.method.parsing` and other light modules stay free of torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "verify": "melrl.verify.verifier",
    "verify_batch": "melrl.verify.verifier",
    "extract_answer": "melrl.verify.answers",
    "load_records": "melrl.data",
    "Record": "melrl.data",
    "resolve_model": "melrl.models",
    "build_tiny_model": "melrl.models",
    "make_accuracy_reward": "melrl.training.rewards",
    "MELConfig": "melrl.training.config",
    "MELTrainer": "melrl.training.trainer",
    "RunArguments": "melrl.cli.train",
    "compute_advantages": "melrl.method.algorithms",
    "select_pairs": "melrl.method.pairs",
    "find_leaks": "melrl.method.leaks",
    "parse_meta_experience": "melrl.method.parsing",
    "pass_at_k": "melrl.evaluation.metrics",
    "evaluate": "melrl.evaluation.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'melrl' has no attribute {name!r}")
