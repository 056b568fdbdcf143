"""Reward functions for TRL's GRPOTrainer, and where MEL's verdicts come from."""

from __future__ import annotations

from typing import Any, Callable

from melrl.method.prompts import ANSWER_FORMAT
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


def accuracy_reward_for(args) -> AccuracyReward:
    """The accuracy reward that reads answers the way `args.prompt_template` asks for them."""
    return make_accuracy_reward(ANSWER_FORMAT[args.prompt_template], args.verifier_timeout)


def verdict_sources(args, reward_funcs, trainer_kwargs: dict):
    """The reward functions of a `MELTrainer`: the user's, or, where the loop (or `rft`) needs verdicts and the user
    gave no reward source (no reward function, `environment_factory` or `rollout_func`), the accuracy reward of
    `args.prompt_template`. Fails, naming them, when the training dataset lacks the columns the loop or the default
    reward reads."""
    default = reward_funcs is None and (args.meta_experience or args.algorithm == "rft") and not (
        trainer_kwargs.get("environment_factory") or trainer_kwargs.get("rollout_func"))
    needed = ({"problem", "answer"} if args.meta_experience else set()) | ({"answer"} if default else set())
    dataset = trainer_kwargs.get("train_dataset")
    if dataset is None and not trainer_kwargs.get("environment_factory"):
        return reward_funcs  # TRL refuses a trainer with no data and no environment that owns it, in its own words
    if needed and dataset is None:
        raise ValueError(f"the meta-experience loop needs a train_dataset with the column(s) {sorted(needed)}; "
                         "set meta_experience: false to train without it")
    missing = needed - set(getattr(dataset, "column_names", None) or needed)  # a stream may not know its columns
    if missing:
        raise ValueError(
            f"the training dataset lacks the column(s) {sorted(missing)}: the meta-experience loop needs the problem "
            "text and the gold answer beside the prompt (melrl.cli.train.build_train_dataset makes them), and "
            "the default accuracy reward the gold answer; set meta_experience: false to train on prompts alone")
    return [accuracy_reward_for(args)] if default else reward_funcs


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
