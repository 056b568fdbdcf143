"""Configuration: `MELConfig` (the trainer's) and `RunArguments` (model, data and prompt for `melrl train`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate.utils import DistributedType
from trl import GRPOConfig

from melrl.method import guidance
from melrl.method.algorithms import ADVANTAGE_METHODS, NLL_AVERAGES
from melrl.method.meta_phase import EXPERIENCE_FILTERS
from melrl.method.prompts import ANALYSIS_TEMPLATES, SOLVE_TEMPLATES
from melrl.training.analyst import ANALYSTS


@dataclass
class MELConfig(GRPOConfig):
    r"""
    Configuration of [`MELTrainer`]: every [`trl.GRPOConfig`] field plus the meta-experience loop.

    Base algorithm:
        algorithm (`str`, defaults to `"grpo"`): `grpo` (TRL's group-normalised advantages and `loss_type`),
            `reinforce_pp` (REINFORCE++ as verl: per-token returns of the outcome reward, minus `beta` x k1 KL per
            token when `beta` > 0, whitened over the valid tokens of the global batch), `reinforce_pp_baseline`
            (group mean of the scores subtracted, then whitened the same way) or `rft` (NLL of the correct
            rollouts, normalised by their token count). Under `reinforce_pp*`, `beta` is the in-reward KL
            coefficient and TRL's KL loss term is off. Each combines with `meta_experience` on or off.

    Meta-experience:
        meta_experience (`bool`, defaults to `True`): run construction, replay validation and internalization.
            Off, the trainer is plain GRPO on the same batch.
        mel_coef (`float`, defaults to `1.0`): coefficient of the internalization NLL in the loss (paper: 1).
        nll_average (`str`, defaults to `"experience"`): how the kept meta-experiences' NLLs are averaged:
            `experience` (every kept meta-experience of the step alike) or `prompt` (paper Eq. 10: over each
            prompt's kept meta-experiences, then over prompts).
        max_pairs_per_prompt (`int`, defaults to `2`): contrastive pairs analysed per prompt with both correct and
            incorrect rollouts. The paper leaves this open; 2 keeps the analysis cost near the rollout cost at G=8.
        pair_seed (`int` or `None`): seed of the pair choice; `None` uses `seed`.
        analysis_prompt (`str`, defaults to `"paper"`): the analysis instruction I: `paper` (Appendix C's
            Meta-Experience Prompt, verbatim) or `compact` (ours: shorter, one markdown heading per part of M).
        analysis_guidance (`str`, defaults to `"none"`): `none` (the paper's: the analysis is generated freely) or
            `sections` (ours, beyond the paper: the analysis is constrained by a grammar to the prompt's output
            skeleton, its heading lines verbatim and in order with free text between them, each section at most
            its share of `analysis_max_new_tokens` at 3 characters a token; `melrl.method.guidance`). Through
            vLLM's structured outputs on vLLM, through xgrammar's logits processor on transformers (needs the
            `guidance` extra).
        experience_filter (`str`, defaults to `"replay"`): what sends a meta-experience to replay: `replay` (the
            paper's: every one; replay alone decides) or `format` (ours: only those that were not truncated and
            whose sections parse).
        analysis_max_new_tokens (`int`, defaults to `1024`): token budget of one meta-experience.
        analysis_max_prompt_length (`int`, defaults to `4096`): context budget of the analysis prompt; longer
            solutions are cut in the middle (head and tail kept) so that the prompt fits.
        replay_samples (`int`, defaults to `1`): replay answers sampled per meta-experience.
        replay_threshold (`float`, defaults to `1.0`): fraction of replay answers that must verify to keep it.
        replay_max_new_tokens (`int` or `None`): token budget of a replay answer; `None` uses
            `max_completion_length`.
        leak_check (`bool`, defaults to `True`): reject meta-experiences whose heuristics or summary contain the
            gold answer or the problem's distinctive numbers, under either `experience_filter` (ours, beyond the
            paper).
        prompt_template (`str`, defaults to `"qwen-boxed"`): solve template; decides how answers are extracted.
        verifier_timeout (`float`, defaults to `5.0`): seconds allowed to verify one answer.

    External analyst (beyond the paper; `melrl.training.analyst`):
        analyst (`str`, defaults to `"policy"`): who writes the meta-experiences: `policy` (the paper's: the policy
            analyses its own pairs) or `endpoint` (ours: a model served behind an OpenAI-compatible chat-completions
            API gets the same analysis prompt; replay and the NLL stay on the policy, its text tokenized by the
            policy's tokenizer). Needs the `analyst` extra.
        analyst_base_url (`str` or `None`): the server's URL, e.g. `http://127.0.0.1:8000/v1` (`analyst: endpoint`).
        analyst_model (`str` or `None`): the model id the server serves (as listed by its `GET /models`).
        analyst_api_key_env (`str`, defaults to `"MELRL_ANALYST_API_KEY"`): the environment variable holding the API
            key (unset: no key). The key itself is never part of the config, the logs or the run files.
        analyst_max_new_tokens (`int` or `None`): the analyst's reply budget in its own tokens; `None` uses
            `analysis_max_new_tokens`. A reply cut at it (`finish_reason: length`), or longer than
            `analysis_max_new_tokens` policy tokens, counts as truncated.
        analyst_temperature (`float` or `None`): the analyst's sampling temperature; `None` uses `temperature`.
        analyst_concurrency (`int`, defaults to `8`): requests in flight at once.
        analyst_timeout (`float`, defaults to `300.0`): seconds allowed per request attempt.
        analyst_retries (`int`, defaults to `2`): retries of a failed or timed-out request; one that still fails is
            counted in `analyst_failed` and its pair is skipped.
        analyst_backoff (`float`, defaults to `1.0`): seconds before the first retry, doubled for each further one.

    Validation during training (lines `{"step", "eval/<benchmark>/pass@1", ...}` in `metrics.jsonl`):
        validation_benchmarks (`list[str]` or `None`): benchmarks to validate on (e.g. `[math500, amc23]`).
        validation_steps (`int`, defaults to `0`): validate every this many steps (0: never).
        validation_limit (`int`, defaults to `32`): first N problems of each benchmark.
        validation_max_new_tokens (`int`, defaults to `1024`): token budget of a validation answer.
    """

    algorithm: str = field(default="grpo", metadata={"help": f"Base algorithm: one of {ADVANTAGE_METHODS}."})
    meta_experience: bool = field(default=True, metadata={"help": "Run the meta-experience loop."})
    mel_coef: float = field(default=1.0, metadata={"help": "Coefficient of the internalization NLL."})
    nll_average: str = field(default="experience", metadata={"help": f"NLL average: one of {NLL_AVERAGES}."})
    max_pairs_per_prompt: int = field(default=2, metadata={"help": "Contrastive pairs per mixed prompt."})
    pair_seed: int | None = field(default=None, metadata={"help": "Seed of the pair choice (default: seed)."})
    analysis_prompt: str = field(
        default="paper", metadata={"help": f"Analysis prompt: one of {sorted(ANALYSIS_TEMPLATES)} (paper: Appendix C)."}
    )
    analysis_guidance: str = field(
        default="none", metadata={"help": f"Analysis guidance: one of {guidance.GUIDANCE_MODES} (none: the paper's)."}
    )
    experience_filter: str = field(
        default="replay", metadata={"help": f"What is replayed: one of {EXPERIENCE_FILTERS} (replay: the paper's)."}
    )
    analysis_max_new_tokens: int = field(default=1024, metadata={"help": "Token budget of one analysis."})
    analysis_max_prompt_length: int = field(default=4096, metadata={"help": "Context budget of the analysis prompt."})
    replay_samples: int = field(default=1, metadata={"help": "Replay answers per meta-experience."})
    replay_threshold: float = field(default=1.0, metadata={"help": "Fraction of replays that must verify."})
    replay_max_new_tokens: int | None = field(default=None, metadata={"help": "Replay budget (default: rollout's)."})
    leak_check: bool = field(default=True, metadata={"help": "Reject meta-experiences that leak the answer."})
    prompt_template: str = field(default="qwen-boxed", metadata={"help": f"One of {sorted(SOLVE_TEMPLATES)}."})
    verifier_timeout: float = field(default=5.0, metadata={"help": "Seconds allowed per verification."})
    analyst: str = field(default="policy", metadata={"help": f"Who writes the analyses: one of {ANALYSTS} (policy: "
                                                         "the paper's; endpoint: beyond the paper)."})
    analyst_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server URL (endpoint)."})
    analyst_model: str | None = field(default=None, metadata={"help": "Model id served there (endpoint)."})
    analyst_api_key_env: str = field(default="MELRL_ANALYST_API_KEY",
                                     metadata={"help": "Environment variable holding the analyst's API key."})
    analyst_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Analyst's reply budget (default: analysis_max_new_tokens)."})
    analyst_temperature: float | None = field(default=None, metadata={"help": "Analyst temperature (default: "
                                                                              "temperature)."})
    analyst_concurrency: int = field(default=8, metadata={"help": "Analyst requests in flight at once."})
    analyst_timeout: float = field(default=300.0, metadata={"help": "Seconds per analyst request attempt."})
    analyst_retries: int = field(default=2, metadata={"help": "Retries of a failed analyst request."})
    analyst_backoff: float = field(default=1.0, metadata={"help": "Seconds before the first retry (doubling)."})
    validation_benchmarks: list[str] | None = field(default=None, metadata={"help": "Benchmarks to validate on."})
    validation_steps: int = field(default=0, metadata={"help": "Validate every N steps (0: never)."})
    validation_limit: int = field(default=32, metadata={"help": "Problems per benchmark for validation."})
    validation_max_new_tokens: int = field(default=1024, metadata={"help": "Token budget of a validation answer."})

    def __post_init__(self):
        super().__post_init__()
        if self.algorithm not in ADVANTAGE_METHODS:
            raise ValueError(f"algorithm: {self.algorithm!r} is not one of {ADVANTAGE_METHODS}")
        if self.prompt_template not in SOLVE_TEMPLATES:
            raise ValueError(f"prompt_template: {self.prompt_template!r} is not one of {sorted(SOLVE_TEMPLATES)}")
        if self.analysis_prompt not in ANALYSIS_TEMPLATES:
            raise ValueError(f"analysis_prompt: {self.analysis_prompt!r} is not one of {sorted(ANALYSIS_TEMPLATES)}")
        if self.analysis_guidance not in guidance.GUIDANCE_MODES:
            raise ValueError(f"analysis_guidance: {self.analysis_guidance!r} is not one of {guidance.GUIDANCE_MODES}")
        if (self.analysis_guidance == "sections" and self.meta_experience and not self.use_vllm
                and not guidance.xgrammar_available()):
            raise ValueError("analysis_guidance: sections generates analyses with xgrammar's logits processor on the "
                             f"transformers path, and xgrammar is not installed: {guidance.INSTALL_HINT}")
        if self.experience_filter not in EXPERIENCE_FILTERS:
            raise ValueError(f"experience_filter: {self.experience_filter!r} is not one of {EXPERIENCE_FILTERS}")
        if self.max_pairs_per_prompt < 1:
            raise ValueError("max_pairs_per_prompt must be >= 1 (set meta_experience: false to turn the loop off)")
        if self.replay_samples < 1:
            raise ValueError("replay_samples must be >= 1")
        if not 0.0 < self.replay_threshold <= 1.0:
            raise ValueError("replay_threshold must be in (0, 1]")
        if self.nll_average not in NLL_AVERAGES:
            raise ValueError(f"nll_average: {self.nll_average!r} is not one of {NLL_AVERAGES}")
        if self.mel_coef < 0:
            raise ValueError("mel_coef must be >= 0")
        if self.validation_steps < 0 or self.validation_limit < 1:
            raise ValueError("validation_steps must be >= 0 and validation_limit >= 1")
        if self.validation_steps and not self.validation_benchmarks:
            raise ValueError("validation_steps is set but validation_benchmarks is empty: name the benchmarks")
        if self.analysis_max_new_tokens < 1 or self.analysis_max_prompt_length < 64:
            raise ValueError("analysis_max_new_tokens must be >= 1 and analysis_max_prompt_length >= 64")
        self._check_vllm_context()
        self._check_analyst()

    def _check_analyst(self) -> None:
        if self.analyst not in ANALYSTS:
            raise ValueError(f"analyst: {self.analyst!r} is not one of {ANALYSTS}")
        if self.analyst != "endpoint":
            return
        if not (self.analyst_base_url and self.analyst_model):
            raise ValueError("analyst: endpoint needs analyst_base_url (e.g. http://127.0.0.1:8000/v1) and "
                             "analyst_model (the id the server serves)")
        if self.analysis_guidance != "none":
            raise ValueError("analysis_guidance: sections constrains the policy's own analyses; with analyst: "
                             "endpoint set analysis_guidance: none")
        if (self.analyst_max_new_tokens or 1) < 1 or self.analyst_concurrency < 1 or self.analyst_retries < 0:
            raise ValueError("analyst_max_new_tokens and analyst_concurrency must be >= 1, analyst_retries >= 0")
        if self.analyst_timeout <= 0 or self.analyst_backoff < 0:
            raise ValueError("analyst_timeout must be > 0 and analyst_backoff >= 0")

    def _check_vllm_context(self) -> None:
        """Every generation must fit vLLM's context: fail before any weights load, naming the budget."""
        if not (self.use_vllm and self.vllm_max_model_length):
            return
        needs = {"max_completion_length": self.max_completion_length}
        if self.meta_experience:
            needs["analysis_max_prompt_length + analysis_max_new_tokens"] = (
                self.analysis_max_prompt_length + self.analysis_max_new_tokens)
            # a replay prompt holds the meta-experience before the question
            needs["analysis_max_new_tokens + replay budget"] = self.analysis_max_new_tokens + self.replay_budget
        for name, tokens in needs.items():
            if tokens > self.vllm_max_model_length:
                raise ValueError(f"{name} = {tokens} tokens does not fit vllm_max_model_length = "
                                 f"{self.vllm_max_model_length}: raise vllm_max_model_length or lower the budget")

    @property
    def replay_budget(self) -> int:
        return self.replay_max_new_tokens or self.max_completion_length


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
