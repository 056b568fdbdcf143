"""Reward functions for TRL's GRPOTrainer."""

from __future__ import annotations

from typing import Any, Callable

from melrl.verify.verifier import default_pool


class AccuracyReward:
    """1.0 when a completion's final answer equals the ``answer`` column, else 0.0.

    Follows TRL's reward contract: called as ``reward(prompts=..., completions=..., **columns)`` and returns one
    float per completion. Completions are strings or conversations (lists of ``{"role", "content"}`` messages).
    Pass ``log_metric`` (TRL does) to have per-batch verifier timeouts and missing answers logged.
    """

    def __init__(self, answer_format: str = "auto", timeout: float | None = None):
        self.answer_format = answer_format
        self.timeout = timeout
        self.__name__ = "accuracy"  # TRL names the reward (and its logged metrics) after this

    def __call__(
        self, prompts: list | None = None, completions: list | None = None, answer: list | None = None, **kwargs: Any
    ) -> list[float]:
        if completions is None:
            raise ValueError("accuracy reward: no completions given")
        if answer is None:
            raise ValueError("accuracy reward needs an 'answer' column in the dataset")
        pool = default_pool()
        before = pool.stats.as_dict()
        texts = [_completion_text(c) for c in completions]
        ok = pool.verify_batch(texts, list(answer), answer_format=self.answer_format, timeout=self.timeout)
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if callable(log_metric):
            after = pool.stats.as_dict()
            for name in ("timeouts", "no_answer"):
                log_metric(f"verifier/{name}", float(after[name] - before[name]))
        return [1.0 if x else 0.0 for x in ok]


def make_accuracy_reward(answer_format: str = "auto", timeout: float | None = None) -> AccuracyReward:
    """An `AccuracyReward` (named "accuracy") for ``GRPOTrainer(reward_funcs=[...])``."""
    return AccuracyReward(answer_format=answer_format, timeout=timeout)


def _completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the last assistant message of a conversation."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)) and completion:
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"]
        chosen = assistant[-1] if assistant else (messages[-1] if messages else None)
        return _content_text(chosen.get("content")) if chosen else ""
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal form: [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""
