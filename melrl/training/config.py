"""Configuration of the trainer: `MELConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from melrl.method import guidance
from melrl.method.algorithms import ADVANTAGE_METHODS, NLL_AVERAGES
from melrl.method.meta_phase import EXPERIENCE_FILTERS
from melrl.method.prompts import ANALYSIS_TEMPLATES, SOLVE_TEMPLATES
from melrl.training.analyst import ANALYSTS


@dataclass
class MELConfig(GRPOConfig):
    r"""Configuration of [`MELTrainer`][melrl.training.trainer.MELTrainer]: every `trl.GRPOConfig` field (and so
    every `transformers.TrainingArguments` field) plus the meta-experience loop.

    `MELConfig()` is the paper's method. A setting beyond the paper says so ("ours") and is off by default. In YAML
    or on the command line every field is a key: `melrl train --config FILE --key value`.

    Parameters: Base algorithm
        algorithm: the base method, combined with `meta_experience` on or off: `grpo` (TRL's group-normalised
            advantages and `loss_type`), `reinforce_pp` (REINFORCE++ as verl: per-token returns of the outcome
            reward, minus `beta` x k1 KL per token when `beta` > 0, whitened over the valid tokens of the global
            batch), `reinforce_pp_baseline` (group mean of the scores subtracted, then whitened the same way) or
            `rft` (NLL of the correct rollouts, normalised by their token count). Under `reinforce_pp*`, `beta` is
            the in-reward KL coefficient and TRL's KL loss term is off.
        loss_type: TRL's policy-loss normalisation. `grpo` is the paper's Eq. 10 (each response's token mean, then
            the mean over responses); `GRPOConfig`'s own default is `dapo` (every token of the batch alike). The
            other values are TRL's (`trl.GRPOConfig`).

    Parameters: Meta-experience loop
        meta_experience: run construction, replay validation and internalization. Off, the trainer is the base
            algorithm alone on the same batch.
        mel_coef: coefficient of the internalization NLL in the loss (the paper's: 1).
        nll_average: how the kept meta-experiences' NLLs are averaged: `experience` (every kept meta-experience of
            the step alike; the paper's Eq. 7) or `prompt` (the paper's Eq. 10: over each prompt's kept
            meta-experiences, then over the prompts that kept any).
        max_pairs_per_prompt: contrastive (correct, incorrect) pairs analysed per prompt with both correct and
            incorrect rollouts. `None` is the paper's set (§3.2): every (correct, incorrect) pair, up to (G/2)^2 per
            prompt (16 at G = 8). A number caps it (ours, beyond the paper): fewer analyses, replays and NLL rows
            per step; which pairs are taken: `melrl.method.pairs.select_pairs`.
        pair_seed: seed of the pair choice; `None` uses `seed`.
        analysis_prompt: the analysis instruction: `paper` (Appendix C's Meta-Experience Prompt, verbatim) or
            `compact` (ours: shorter, one markdown heading per part of the meta-experience).
        analysis_guidance: `none` (the paper's: the analysis is generated freely) or `sections` (ours, beyond the
            paper: a grammar holds the analysis to the prompt's output skeleton, its heading lines verbatim and in
            order with free text between them, each section at most its share of `analysis_max_new_tokens` at 3
            characters a token; `melrl.method.guidance`). Through vLLM's structured outputs on vLLM, through
            xgrammar's logits processor on transformers (needs the `guidance` extra).
        experience_filter: what sends a meta-experience to replay: `replay` (the paper's: every one that is not
            empty; replay alone decides) or `format` (ours: only those that were not truncated and whose sections
            parse).
        analysis_max_new_tokens: token budget of one meta-experience.
        analysis_max_prompt_length: context budget of the analysis prompt; longer solutions are cut in the middle
            (head and tail kept) so that the prompt fits.
        replay_samples: replay answers sampled per meta-experience (the paper's: 1).
        replay_threshold: fraction of the replay answers that must verify to keep the meta-experience (the
            paper's: 1.0, its one answer).
        replay_max_new_tokens: token budget of a replay answer; `None` uses `max_completion_length`.
        leak_check: ours, beyond the paper: reject meta-experiences whose heuristics or reflective summary contain
            the gold answer or the problem's distinctive numbers, under either `experience_filter`
            (`melrl.method.leaks`). Off by default, as the paper has no such check (Appendix C's prompt forbids the
            leak, and replay is its only filter); on, a meta-experience that states the answer is not internalized
            even though its replay verifies trivially. The paper presets turn it on.
        prompt_template: solve template (`qwen-boxed`, `dapo`, `short`); decides how answers are extracted.
        verifier_timeout: seconds allowed to verify one answer.

    Parameters: Validation during training
        validation_benchmarks: benchmarks to validate on (e.g. `[math500, amc23]`); each validation adds a line
            `{"step", "eval/<benchmark>/pass@1", ...}` to `metrics.jsonl`.
        validation_steps: validate every this many optimizer steps (0: never).
        validation_limit: the first N problems of each benchmark.
        validation_max_new_tokens: token budget of a validation answer.

    Parameters: External analyst (beyond the paper)
        analyst: who writes the meta-experiences: `policy` (the paper's: the policy analyses its own pairs) or
            `endpoint` (ours, beyond the paper: a model served behind an OpenAI-compatible chat-completions API gets
            the same analysis prompt; replay and the NLL stay on the policy, the reply tokenized by the policy's
            tokenizer; `melrl.training.analyst`). Needs the `analyst` extra.
        analyst_base_url: the server's URL, e.g. `http://127.0.0.1:8000/v1` (`analyst: endpoint`).
        analyst_model: the model id the server serves (as its `GET /models` lists it).
        analyst_api_key_env: the environment variable holding the API key (unset: no key). The key itself is never
            part of the config, the logs or the run files.
        analyst_max_new_tokens: the analyst's reply budget in its own tokens; `None` uses `analysis_max_new_tokens`.
            A reply cut at it (`finish_reason: length`), or longer than `analysis_max_new_tokens` policy tokens,
            counts as truncated.
        analyst_temperature: the analyst's sampling temperature; `None` uses `temperature`.
        analyst_concurrency: analyst requests in flight at once.
        analyst_timeout: seconds allowed per request attempt (wall clock).
        analyst_retries: retries of a failed or timed-out request; one that still fails is counted in
            `analyst_failed` and its pair is skipped.
        analyst_backoff: seconds before the first retry, doubled for each further one.
    """

    algorithm: str = field(default="grpo", metadata={"help": f"Base algorithm: one of {ADVANTAGE_METHODS}."})
    loss_type: str = field(
        default="grpo", metadata={"help": "Policy-loss normalisation (TRL's values); grpo is the paper's Eq. 10."}
    )
    meta_experience: bool = field(default=True, metadata={"help": "Run the meta-experience loop."})
    mel_coef: float = field(default=1.0, metadata={"help": "Coefficient of the internalization NLL."})
    nll_average: str = field(default="experience", metadata={"help": f"NLL average: one of {NLL_AVERAGES}."})
    max_pairs_per_prompt: int | None = field(
        default=None, metadata={"help": "Contrastive pairs per mixed prompt: None, every pair (the paper's), or a cap."}
    )
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
    leak_check: bool = field(
        default=False, metadata={"help": "Ours: reject meta-experiences that leak the answer (off: the paper's)."}
    )
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
        if self.max_pairs_per_prompt is not None and self.max_pairs_per_prompt < 1:
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
