"""Periodic validation during training: a `TrainerCallback` that evaluates the current policy every `eval_steps`
optimizer steps on a few problems of each benchmark, for validation curves like the paper's Figures 6-8."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from transformers import TrainerCallback

from melrl.evaluation.runner import evaluate

DEFAULT_VALIDATION_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "olympiadbench")


def flat_metrics(metrics: Mapping[str, Mapping[str, float]], prefix: str = "eval") -> dict[str, float]:
    """{"aime24": {"pass@1": x}} → {"eval/aime24/pass@1": x} (the "average" entry included)."""
    return {f"{prefix}/{bench}/{name}": value for bench, values in metrics.items() for name, value in values.items()}


class ValidationCallback(TrainerCallback):
    """Every `eval_steps` steps: greedy Pass@1 (and Avg@k / Pass@k when k > 0) of the policy on the first `limit`
    problems of each benchmark. The line `{"step": s, "eval/<benchmark>/<metric>": v, ..., "eval/average/<metric>":
    v}` goes to `sink` (on the main process only) and to `history`.

    The policy is the trainer's model (`model` and `processing_class` of the callback events), generated from with
    transformers in eval mode under `torch.no_grad`, and put back in train mode afterwards. With several processes
    every process evaluates (under ZeRO-3 / FSDP generation is collective).
    """

    def __init__(
        self,
        benchmarks: Sequence[str] = DEFAULT_VALIDATION_BENCHMARKS,
        *,
        eval_steps: int,
        sink: Callable[[dict], None] | None = None,
        limit: int | None = 32,
        template: str = "qwen-boxed",
        k: int = 0,
        temperature: float = 0.6,
        max_new_tokens: int = 1024,
        batch_size: int | None = None,
        seed: int = 0,
        data_dir: str | None = None,
        verifier_timeout: float | None = None,
        eval_on_start: bool = False,
    ):
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {eval_steps}")
        self.benchmarks = list(benchmarks)
        self.eval_steps = eval_steps
        self.sink = sink
        self.eval_on_start = eval_on_start
        self.options = dict(limit=limit, template=template, k=k, temperature=temperature, greedy=True,
                            max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, data_dir=data_dir,
                            verifier_timeout=verifier_timeout)
        self.history: list[dict] = []

    def validate(self, model, tokenizer, step: int) -> dict:
        """Evaluate (model, tokenizer) now and return the metrics line for `step`."""
        results = evaluate((model, tokenizer), self.benchmarks, backend="transformers", progress=False,
                           **self.options)
        line = {"step": step, **flat_metrics(results["metrics"])}
        self.history.append(line)
        return line

    def on_train_begin(self, args, state, control, **kwargs):
        if self.eval_on_start:
            self._run(state, kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > 0 and state.global_step % self.eval_steps == 0:
            self._run(state, kwargs)

    def _run(self, state, kwargs: Mapping) -> None:
        tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        line = self.validate(kwargs["model"], tokenizer, state.global_step)
        if self.sink is not None and state.is_world_process_zero:
            self.sink(line)
