"""`melrl train`: the run arguments (`RunArguments`: the model and data to train on), then the model, data and
MELTrainer they name."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import DistributedType

from melrl.training.config import MELConfig
from melrl.data import load_records_with_report
from melrl.models import load_model_and_tokenizer, resolve_model, stop_token_ids
from melrl.method.prompts import render, replay_text, solve_text
from melrl.training.resume import checkpoint_step, resolve_checkpoint, rewind_run_files

logger = logging.getLogger("melrl.train")


@dataclass
class RunArguments:
    """What `melrl train` trains on: the model, the data and how much of it."""

    model_name_or_path: str = field(
        default="smollm2-135m-instruct", metadata={"help": "Embedded name, local folder or hub id."}
    )
    dataset_name: str = field(default="arith", metadata={"help": "Registered name, local file or hub:ORG/NAME."})
    dataset_split: str | None = field(default=None, metadata={"help": "Split, where the dataset has several."})
    dataset_limit: int | None = field(default=None, metadata={"help": "Use only the first N problems."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of the local datasets."})
    arith_level: int = field(default=1, metadata={"help": "Difficulty of the arith generator (1-5)."})
    arith_size: int = field(default=256, metadata={"help": "Problems drawn by the arith generator."})
    skip_invalid: bool = field(default=False, metadata={"help": "Skip malformed rows (counted) instead of failing."})
    dtype: str = field(default="float32", metadata={"help": "Weights dtype: float32, bfloat16 or float16."})
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters only (peft)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "Comma-separated modules or all-linear."})

    def peft_config(self):
        """The LoRA configuration when `use_peft` is set, else None."""
        if not self.use_peft:
            return None
        from peft import LoraConfig

        targets = self.lora_target_modules
        return LoraConfig(
            r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, task_type="CAUSAL_LM",
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        )


def check_master_weights(run: RunArguments, config: MELConfig) -> None:
    """Refuse to train every weight in bfloat16 or float16 where nothing keeps an fp32 copy of them: under DDP or on
    one process, AdamW would update the half-precision weights themselves, and at small learning rates (the
    presets' 1e-6) most updates round away. DeepSpeed keeps fp32 master weights; FSDP2 under mixed precision
    (`bf16: true`) casts the weights it trains to fp32; LoRA trains fp32 adapters. fp32 weights do not stay fp32
    under TRL's continuous batching with `bf16: true`, which casts the policy to bf16 in place before it generates."""
    engine = config.distributed_state.distributed_type
    mixed_precision = config.bf16 or config.fp16
    if run.use_peft or engine == DistributedType.DEEPSPEED or (engine == DistributedType.FSDP and mixed_precision):
        return
    where = {DistributedType.NO: "on one process", DistributedType.FSDP: "under FSDP without bf16: true"}.get(
        engine, f"under DDP ({engine.value})")
    if run.dtype != "float32":
        raise ValueError(
            f"dtype: {run.dtype} {where} trains {run.dtype} weights with no fp32 master copy (AdamW's small updates "
            "round away). Use dtype: float32 with bf16: true (fp32 weights, bf16 autocast), or a DeepSpeed kit "
            "(configs/accelerate/deepspeed_zero3.yaml) or FSDP with bf16: true, which keep fp32 master weights, or "
            "LoRA (use_peft: true)"
        )
    if config.use_transformers_continuous_batching and mixed_precision:
        raise ValueError(
            f"use_transformers_continuous_batching with bf16/fp16 {where}: TRL casts the policy to half precision in "
            "place before each continuous-batching generation, so the fp32 weights would train in half precision. "
            "Use plain generation or vLLM, or a DeepSpeed kit (configs/accelerate/deepspeed_zero3.yaml)"
        )


def load_run_records(run: RunArguments, seed: int):
    """The problems of a run, from the registry, a local file or the hub."""
    options = {"n": run.arith_size, "level": run.arith_level} if run.dataset_name == "arith" else {}
    records, skipped = load_records_with_report(
        run.dataset_name,
        run.dataset_split,
        data_dir=run.data_dir,
        limit=run.dataset_limit,
        skip_invalid=run.skip_invalid,
        seed=seed,
        **options,
    )
    if not records:
        raise ValueError(f"dataset {run.dataset_name!r} gave no problems")
    if skipped:
        logger.warning("skipped %d malformed rows of %s", skipped, run.dataset_name)
    return records


def build_train_dataset(records, tokenizer, template: str):
    """A `datasets.Dataset` with the rendered solve prompt and the columns MEL needs (problem, answer, id)."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": [render(tokenizer, solve_text(r.problem, template)) for r in records],
            "problem": [r.problem for r in records],
            "answer": [r.answer for r in records],
            "id": [r.id for r in records],
        }
    )


def check_model_budgets(model_path: str, config: MELConfig) -> None:
    """Fail before any weights load when a token budget cannot fit the model's context."""
    from transformers import AutoConfig

    context = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    if context is None:
        return
    budgets = {"max_completion_length": config.max_completion_length}
    if config.meta_experience:
        budgets["analysis_max_prompt_length + analysis_max_new_tokens"] = (
            config.analysis_max_prompt_length + config.analysis_max_new_tokens
        )
        budgets["replay_max_new_tokens"] = config.replay_budget
    for name, tokens in budgets.items():
        if tokens > context:
            raise ValueError(f"{name} = {tokens} tokens does not fit the model's context of {context} tokens")


def check_vllm_prompt_budgets(records, tokenizer, config: MELConfig) -> None:
    """With the longest problem of the data, every vLLM generation must fit `vllm_max_model_length`: the rollout
    (solve prompt + `max_completion_length`) and the replay (the Empirical Validation Prompt around a meta-experience
    of `analysis_max_new_tokens` + the replay budget). Fails before vLLM starts, naming the problem."""
    if not (config.use_vllm and config.vllm_max_model_length):
        return
    texts = [render(tokenizer, solve_text(r.problem, config.prompt_template)) for r in records]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    longest = max(range(len(records)), key=lengths.__getitem__)
    needs = {"the longest solve prompt + max_completion_length": lengths[longest] + config.max_completion_length}
    if config.meta_experience:
        replay = render(tokenizer, replay_text(records[longest].problem, "", config.prompt_template))
        needs["its replay prompt + analysis_max_new_tokens + replay budget"] = (
            len(tokenizer(replay, add_special_tokens=False)["input_ids"]) + config.analysis_max_new_tokens
            + config.replay_budget)
    for name, tokens in needs.items():
        if tokens > config.vllm_max_model_length:
            raise ValueError(f"{name} = {tokens} tokens (problem {records[longest].id}) does not fit "
                             f"vllm_max_model_length = {config.vllm_max_model_length}: raise it or lower the budgets")


def name_vllm_stop_tokens(config: MELConfig, model, tokenizer) -> None:
    """With vLLM, name every end token (`stop_token_ids` in `generation_kwargs`, which TRL puts into vLLM's sampling
    parameters): vLLM reads only the end tokens of the model's files, not the chat template's end of turn."""
    if config.use_vllm:
        config.generation_kwargs = {**(config.generation_kwargs or {}),
                                    "stop_token_ids": stop_token_ids(model, tokenizer)}


def build_trainer(run: RunArguments, config: MELConfig, callbacks=None):
    from melrl.training.rewards import accuracy_reward_for
    from melrl.training.trainer import MELTrainer

    check_master_weights(run, config)
    records = load_run_records(run, config.seed)
    model_path = resolve_model(run.model_name_or_path)
    if Path(model_path).is_dir():  # a hub model's config is checked when it loads
        check_model_budgets(model_path, config)
    model, tokenizer = load_model_and_tokenizer(model_path, dtype=run.dtype)  # stops at the chat template's end too
    name_vllm_stop_tokens(config, model, tokenizer)
    check_vllm_prompt_budgets(records, tokenizer, config)
    dataset = build_train_dataset(records, tokenizer, config.prompt_template)
    # every method `melrl train` runs (GRPO and the other baselines too) learns from the verifier's verdicts
    trainer = MELTrainer(model=model, reward_funcs=[accuracy_reward_for(config)], args=config, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=callbacks, peft_config=run.peft_config())
    if config.validation_steps and config.validation_benchmarks:
        add_validation(trainer, config, run.data_dir)
    return trainer


def add_validation(trainer, config: MELConfig, data_dir) -> None:
    """Validate every `validation_steps` steps; the lines go to `metrics.jsonl` after that step's line."""
    from melrl.evaluation import ValidationCallback

    writer = trainer.run_files.metrics_writer  # None on processes other than the main one
    trainer.add_callback(ValidationCallback(
        config.validation_benchmarks, eval_steps=config.validation_steps, limit=config.validation_limit,
        template=config.prompt_template, max_new_tokens=config.validation_max_new_tokens,
        verifier_timeout=config.verifier_timeout, seed=config.seed, data_dir=data_dir,
        sink=writer.append if writer is not None else None,
    ))


def run_training(run: RunArguments, config: MELConfig, callbacks=None, compact_progress: bool = False):
    """Train; with `resume_from_checkpoint` (a folder, or True for the last finished checkpoint) continue a run.

    The run files are rewound first: to the checkpoint's step when resuming, to nothing for a fresh run.
    """
    checkpoint = resolve_checkpoint(config.output_dir, config.resume_from_checkpoint)
    rewind_run_files(config.output_dir, checkpoint_step(checkpoint) if checkpoint else 0)
    trainer = build_trainer(run, config, callbacks)
    if compact_progress and not config.disable_tqdm:
        from melrl.training.progress import use_compact_progress

        use_compact_progress(trainer)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(config.output_dir)
    end_processes(trainer)
    return trainer


def end_processes(trainer) -> None:
    """After the last collective of a run: wait for every process, then destroy the process group. Left to the
    interpreter's exit, gloo's worker threads can outlive it and abort a finished process (SIGABRT, a failed job)."""
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
