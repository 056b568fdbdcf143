"""melrl: Meta-Experience Learning for LLM reasoning, on TRL.

Names are imported on first use, so that `import melrl.experience` and other light modules stay free of torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "verify": "melrl.verifier",
    "verify_batch": "melrl.verifier",
    "extract_answer": "melrl.answers",
    "load_records": "melrl.data",
    "Record": "melrl.data",
    "resolve_model": "melrl.models",
    "build_tiny_model": "melrl.models",
    "make_accuracy_reward": "melrl.rewards",
    "MELConfig": "melrl.config",
    "MELTrainer": "melrl.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'melrl' has no attribute {name!r}")
