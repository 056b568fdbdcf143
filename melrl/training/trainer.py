"""`MELTrainer`: TRL's GRPOTrainer plus meta-experience construction, replay validation and internalization.

What changes w.r.t. `trl.GRPOTrainer` (everything else is inherited unchanged):
1. **Verdicts kept.** `_calculate_rewards` keeps the rewards TRL gathered and this process's completion ids.
2. **The meta-experience phase.** After TRL's rollouts and advantages, `_meta_experience_phase` pairs the gathered
   rollouts, has the policy (or, with `analyst: endpoint`, a served model: `melrl.training.analyst`) analyse each
   pair, replays every analysis (the paper's `experience_filter: replay`) and keeps the verified ones
   (`melrl.method`), on the engine that made the rollouts.
3. **Advantages.** `algorithm` `reinforce_pp`, `reinforce_pp_baseline` and `rft` replace TRL's advantages by
   `melrl.method.algorithms.compute_advantages` on the global batch: (B, T) per-token for `reinforce_pp*` (with
   `beta` > 0 the k1 KL to the reference is a token-reward penalty and TRL's KL term is off); `rft` has its own loss.
4. **The NLL term.** `_compute_loss` adds `mel_coef` x the mean NLL of the kept meta-experiences (paper Eq. 7), each
   conditioned on its analysis prompt [I, x, y+, y-], in its own backward pass first (but under LOMO and ZeRO-1/2),
   so that the micro-step's memory peak stays that of a plain update.

Run files are written by the callbacks of `melrl.training.run_files`. A step whose loss is not finite on any process
is skipped (`training_step`).
"""

from __future__ import annotations

import logging

import torch
from accelerate.utils import DistributedType, gather_object
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id

from melrl.method.algorithms import (
    TOKEN_LEVEL_METHODS,
    compute_advantages,
    kl_penalty,
    rft_loss_sum,
    sequence_mean_nll,
)
from melrl.method.pairs import select_pairs
from melrl.method.meta_phase import MetaExperienceJob, build_jobs, is_replay_candidate, judge_analysis
from melrl.method.prompts import ANSWER_FORMAT, render
from melrl.training.agreement import decided_on_main
from melrl.training.config import MELConfig
from melrl.training.analyst import write_analyses
from melrl.training.internalization import nll_batches, target_log_probs
from melrl.training.generation import Rollouts, generate_distributed
from melrl.training.nll_backward import own_backward_context, run_own_backward, takes_own_backward
from melrl.training.rewards import verdict_sources
from melrl.training.run_files import CheckpointMarkerCallback, RunFilesCallback
from melrl.verify.verifier import verify_batch

logger = logging.getLogger("melrl.trainer")


class MELTrainer(GRPOTrainer):
    """GRPO with Meta-Experience Learning: the arguments of `trl.GRPOTrainer` with a `MELConfig` (`args=None`: the
    default, the paper's method). A rollout is correct when the reward function named `accuracy` gives it 1 (with
    none of that name, when the weighted total reaches 1); the default reward sources and the columns the loop reads:
    `melrl.training.rewards.verdict_sources`. With `meta_experience: false` no column beyond TRL's own is read.
    """

    _tag_names = ["trl", "grpo", "melrl"]

    def __init__(self, model, reward_funcs=None, args: MELConfig | None = None, **kwargs):
        if args is None:  # as GRPOTrainer builds its default GRPOConfig
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = MELConfig(f"{name.split('/')[-1]}-MEL")
        reward_funcs = verdict_sources(args, reward_funcs, kwargs)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        self._answer_format = ANSWER_FORMAT[args.prompt_template]
        self._scored: tuple[torch.Tensor, list] | None = None  # what `_calculate_rewards` saw last
        self._nll_batches: dict[int, dict] = {}  # micro-step of the generation batch -> this process's NLL rows
        self._skip_update = False
        self.run_files = RunFilesCallback(args.output_dir, self.accelerator, self._metrics["train"])
        self.add_callback(self.run_files)
        self.add_callback(CheckpointMarkerCallback())

    @property
    def stats(self):
        return self.run_files.stats

    # ---------------------------------------------------------------- 1. verdicts kept

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self.stats.timed("scoring"):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._scored = rewards.cpu(), [list(ids) for ids in completion_ids_list]  # (B x processes, funcs); local
        return rewards

    def _correct(self, rewards: torch.Tensor) -> list[bool]:
        names = self.reward_func_names
        column = rewards[:, names.index("accuracy")] if "accuracy" in names else self._total_rewards(rewards)
        return (torch.nan_to_num(column, nan=0.0) >= 1.0 - 1e-6).tolist()

    def _total_rewards(self, rewards: torch.Tensor) -> torch.Tensor:
        """(B, n_funcs) -> (B,) weighted sum of the reward functions, as TRL forms it; NaN counts as 0."""
        return torch.nan_to_num((rewards * self.reward_weights.cpu().unsqueeze(0)).nansum(dim=1), nan=0.0)

    def _gather_rollouts(self, inputs: list[dict], rewards: torch.Tensor, completion_ids: list) -> Rollouts:
        """The generation batch of every process, in TRL's process order (that of the rewards it gathered)."""
        missing = {"problem", "answer"} - set(inputs[0])
        if missing:
            raise ValueError(f"the meta-experience loop needs the column(s) {sorted(missing)} in every training row")
        rows = gather_object([(x["problem"], str(x["answer"]), str(x.get("id", "")), ids)
                              for x, ids in zip(inputs, completion_ids, strict=True)])
        problems, golds, ids, completion_ids = map(list, zip(*rows))
        return Rollouts(problems, golds, ids, completion_ids, rewards, self._correct(rewards))

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        scoring_before, self._scored = self.stats.time["scoring"], None
        with self.stats.timed("rollout"):
            output = super()._generate_and_score_completions(inputs)
        self.stats.time["rollout"] -= self.stats.time["scoring"] - scoring_before
        if self._scored is None:
            raise RuntimeError("GRPOTrainer scored this batch without `_calculate_rewards`: MEL cannot see rewards")
        rewards, completion_ids = self._scored
        correct = self._correct(rewards)
        self._count_rollouts(rewards, correct, output)
        if self.args.algorithm != "grpo":
            self._replace_advantages(output, rewards, correct)
        kept = []
        if self.args.meta_experience:
            kept = self._meta_experience_phase(self._gather_rollouts(inputs, rewards, completion_ids))
        self._assign_nll(kept)
        return output

    def _count_rollouts(self, rewards: torch.Tensor, correct: list[bool], output: dict) -> None:
        group = self.num_generations
        tokens = self.accelerator.gather(torch.stack([output["prompt_mask"].sum(), output["completion_mask"].sum()]))
        self.stats.add(
            reward_sum=self._total_rewards(rewards).sum().item(), rollouts=len(correct),
            groups=len(correct) // group,
            mixed_groups=sum(0 < sum(correct[i : i + group]) < group for i in range(0, len(correct), group)),
            rollout_prompt_tokens=tokens.view(-1, 2)[:, 0].sum().item(),
            rollout_tokens=tokens.view(-1, 2)[:, 1].sum().item(),
        )

    # ---------------------------------------------------------------- 3. advantages

    def _replace_advantages(self, output: dict, rewards: torch.Tensor, correct: list[bool]) -> None:
        """Advantages of the base algorithm, computed on the global batch and sliced back to this process: (B,)
        for `rft`, (B, T) per-token for `reinforce_pp*` (the completion masks, and the in-reward KL when `beta` is
        set, gathered from every process, padded to a common width)."""
        algorithm = self.args.algorithm
        rewards = torch.tensor(correct, dtype=torch.float32) if algorithm == "rft" else self._total_rewards(rewards)
        device = output["advantages"].device
        local = output["advantages"].size(0)
        rows = slice(self.accelerator.process_index * local, (self.accelerator.process_index + 1) * local)
        if algorithm in TOKEN_LEVEL_METHODS:
            mask = output["completion_mask"]  # (B, T); T differs between processes
            token_kl = kl_penalty(self._sampling_log_probs(output), output["ref_per_token_logps"]) * mask \
                if self._kl_in_reward else None
            pad = lambda t: self.accelerator.gather(self.accelerator.pad_across_processes(t, dim=1))  # noqa: E731
            global_mask, global_kl = pad(mask), pad(token_kl) if token_kl is not None else None  # (B x processes, T)
            advantages = compute_advantages(rewards.to(device), self.num_generations, algorithm,
                                            response_mask=global_mask, token_kl=global_kl, kl_coef=self.beta)
            output["advantages"] = advantages[rows, : mask.size(1)].contiguous()
            if global_kl is not None:
                kl = (global_kl * global_mask).sum() / global_mask.sum().clamp(min=1)
                self._metrics["train"]["kl_in_reward"].append(kl.item())
            return
        advantages = compute_advantages(rewards, self.num_generations, algorithm)
        output["advantages"] = advantages[rows].to(device)
        if algorithm == "rft":
            correct_rows = output["advantages"]  # (B,) 1 for a correct rollout
            output["rft_correct"] = correct_rows
            local_tokens = (output["completion_mask"].sum(dim=1) * correct_rows).sum().reshape(1)
            output["rft_tokens"] = self.accelerator.gather(local_tokens).sum()  # scalar: kept whole by the split

    @property
    def _kl_in_reward(self) -> bool:
        """REINFORCE++ with `beta` != 0: the KL to the reference is a penalty in the token rewards, and TRL's KL term
        of the loss is off (it would count it twice)."""
        return self.args.algorithm in TOKEN_LEVEL_METHODS and self.beta != 0.0

    def _sampling_log_probs(self, output: dict) -> torch.Tensor:
        """(B, T) log-probabilities of the completions under the policy that sampled them (verl's `old_log_probs`):
        TRL's `old_per_token_logps` when it computed them, else one no-grad forward pass (text-only inputs)."""
        if output.get("old_per_token_logps") is not None:
            return output["old_per_token_logps"]
        completion_ids = output["completion_ids"]
        input_ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, completion_ids.size(1),
                batch_size=self.args.per_device_train_batch_size)
        return logps

    # ---------------------------------------------------------------- 2. the meta-experience phase

    def _meta_experience_phase(self, rollouts: Rollouts) -> list[MetaExperienceJob]:
        """Construct, check and validate the meta-experiences of a generation batch; return the kept ones (the same
        on every process). Every meta-experience is written to `experiences.jsonl`."""
        args = self.args
        step = self.state.global_step + 1  # the optimizer step these meta-experiences are trained in
        seed = args.seed if args.pair_seed is None else args.pair_seed
        pairs = select_pairs(rollouts.correct, self.num_generations, args.max_pairs_per_prompt, seed=seed, step=step)
        self.stats.add(pairs=len(pairs))
        if not pairs:
            return []
        with self.stats.timed("analysis"):
            jobs = build_jobs(pairs, rollouts.problems, rollouts.golds, rollouts.ids, rollouts.completion_ids,
                              self.processing_class, args.analysis_max_prompt_length,
                              analysis_prompt=args.analysis_prompt)
            jobs = write_analyses(self, jobs)  # by the policy or an external analyst (`analyst`)
            for job in jobs:
                judge_analysis(job, leak_check=args.leak_check)
        self.stats.add(
            constructed=len(jobs), truncated=sum(j.truncated for j in jobs), parsed=sum(j.parsed for j in jobs),
            leaked=sum(bool(j.leaks) for j in jobs), analysis_tokens=sum(len(j.analysis_ids) for j in jobs),
            analysis_prompt_tokens=sum(len(j.analysis_prompt_ids) for j in jobs),
        )
        candidates = [job for job in jobs if is_replay_candidate(job, args.experience_filter)]
        with self.stats.timed("replay"):
            self._replay(candidates)
        kept = [job for job in jobs if job.kept]
        self.stats.add(replayed=len(candidates), kept=len(kept), nll_tokens=sum(len(j.analysis_ids) for j in kept),
                       nll_context_tokens=sum(len(j.analysis_prompt_ids) for j in kept) if self._internalizing else 0)
        self.run_files.write_experiences([job.record(step) for job in jobs])
        return kept

    def _replay(self, candidates: list[MetaExperienceJob]) -> None:
        """Solve each candidate's problem again with its meta-experience in context; verify the answers (on the main
        process, for all)."""
        if not candidates:
            return
        samples = self.args.replay_samples
        prompts = [render(self.processing_class, job.replay_prompt(self.args.prompt_template))
                   for job in candidates for _ in range(samples)]
        prompt_ids, _, _ = self._tokenize_prompts(prompts)
        generated = generate_distributed(self, list(prompt_ids), self.args.replay_budget)
        texts = self.processing_class.batch_decode(generated, skip_special_tokens=True)
        golds = [job.gold for job in candidates for _ in range(samples)]
        verdicts = decided_on_main(self.accelerator, lambda: verify_batch(  # one kept set for every process
            texts, golds, answer_format=self._answer_format, timeout=self.args.verifier_timeout))
        self.stats.add(replay_prompt_tokens=sum(map(len, prompt_ids)), replay_tokens=sum(map(len, generated)))
        for i, job in enumerate(candidates):
            chunk = slice(i * samples, (i + 1) * samples)
            job.set_replays(texts[chunk], verdicts[chunk], self._answer_format, self.args.replay_threshold)

    # ---------------------------------------------------------------- 4. the NLL term

    @property
    def _internalizing(self) -> bool:
        return self.args.meta_experience and self.args.mel_coef > 0

    def _assign_nll(self, kept: list[MetaExperienceJob]) -> None:
        self._nll_batches = nll_batches(
            kept if self._internalizing else [], self.args.nll_average, self.accelerator.num_processes,
            self.accelerator.process_index, self.args.steps_per_generation, self._tokenizer.pad_token_id,
            self.accelerator.device)

    def _compute_loss(self, model, inputs):
        batch = self._nll_batches.get(self._step % self.args.steps_per_generation) if self.model.training else None
        own_backward = batch is not None and takes_own_backward(self.args.optim, self.accelerator)
        if own_backward:  # before the update's graph is built (melrl.training.nll_backward)
            with own_backward_context(self.accelerator, model):
                mel_loss = self._mel_loss(model, batch)  # times its forward pass
                with self.stats.timed("nll"):
                    run_own_backward(self.accelerator, mel_loss)
            mel_loss = mel_loss.detach()
        if self.args.algorithm == "rft" and "rft_correct" in inputs:
            loss = self._rft_loss(model, inputs)
        else:
            # (B, T) advantages under reinforce_pp*: TRL's loss uses them as they are (it unsqueezes only (B,)); a KL
            # in the advantages takes TRL's KL term out of the loss (`beta` read as 0)
            beta, self.beta = self.beta, 0.0 if self._kl_in_reward and self.model.training else self.beta
            try:
                loss = super()._compute_loss(model, inputs)
            finally:
                self.beta = beta
        if batch is None:
            return loss
        return loss + (mel_loss if own_backward else self._mel_loss(model, batch))

    def _mel_loss(self, model, batch: dict) -> torch.Tensor:
        """`mel_coef` x the weighted NLL of this micro-step's meta-experiences, scaled so that an optimizer step's
        micro-steps of all processes add up to the weighted mean (`nll_average`) over the kept meta-experiences of a
        generation batch (`_window_scale`)."""
        with self.stats.timed("nll"):
            logps = target_log_probs(model, self.accelerator, self.temperature == 1.0, batch["input_ids"],
                                     batch["attention_mask"], batch["target_mask"])
            nll = sequence_mean_nll(logps, batch["target_mask"])  # (B,)
        self.stats.add(nll_sum=(nll.detach() * batch["kept"]).sum().item(), nll_count=batch["kept"].sum().item())
        return self.args.mel_coef * (nll * batch["weight"]).sum() * self._window_scale

    @property
    def _window_scale(self) -> float:
        """From a loss normalised over the generation batch of all processes to one accumulation window of one process
        (the backward pass averages processes), as TRL rescales `dapo`: an optimizer step holds
        `gradient_accumulation_steps` / `steps_per_generation` of a generation batch."""
        return self.accelerator.num_processes * self.args.steps_per_generation / self.current_gradient_accumulation_steps

    def _rft_loss(self, model, inputs) -> torch.Tensor:
        """NLL of the correct rollouts' tokens over the correct-token count of the whole generation batch."""
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        logps = target_log_probs(model, self.accelerator, self.temperature == 1.0, input_ids, attention_mask,
                                 completion_mask)  # (B, C)
        loss_sum = rft_loss_sum(logps, completion_mask, inputs["rft_correct"])
        # Every micro-step of the generation batch adds its share; processes are averaged by the backward pass.
        loss = loss_sum * self._window_scale / inputs["rft_tokens"].clamp(min=1.0)
        self._metrics["train"]["rft/correct_fraction"].append(inputs["rft_correct"].float().mean().item())
        return loss

    # ---------------------------------------------------------------- a step whose loss is not finite

    def training_step(self, model, inputs, num_items_in_batch):
        loss = super().training_step(model, inputs, num_items_in_batch)
        bad = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0], device=self.accelerator.device)
        if self.accelerator.reduce(bad, reduction="sum").item() > 0 and not self._skip_update:
            logger.warning("step %d: non-finite loss (%s); this step's update is skipped",
                           self.state.global_step + 1, loss.item())
            self._skip_update = True
            self.stats.add(skipped_update=1)
        if self._skip_update and self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            # With every gradient None the optimizer leaves every parameter as it is. DeepSpeed skips a step whose
            # gradients are not finite itself (and may have stepped inside this backward already).
            model.zero_grad(set_to_none=True)
            if self.optimizer is not None:
                self.optimizer.zero_grad(set_to_none=True)
        if self._step % self.current_gradient_accumulation_steps == 0:
            self._skip_update = False
        return loss
