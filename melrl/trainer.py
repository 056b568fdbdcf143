"""`MELTrainer`: TRL's GRPOTrainer plus meta-experience construction, replay validation and internalization.

What changes w.r.t. `trl.GRPOTrainer` (everything else is inherited):
- `_calculate_rewards` also keeps the step's rollouts and verdicts;
- `_generate_and_score_completions` runs the meta-experience phase after scoring (analysis, parsing, leak check,
  replay, verdicts) on the rollout engine, one batched generate call per phase;
- `_generate_and_score_completions` replaces TRL's advantages for `algorithm` `reinforce_pp`,
  `reinforce_pp_baseline` and `rft` (`melrl.algorithms.compute_advantages`);
- `_compute_loss` uses the RFT loss for `algorithm: rft`, and adds `mel_coef` × the NLL of the kept
  meta-experiences assigned to the micro-step, packed so that their shared context is computed once
  (`melrl.nll_packing`); with one process or DDP the NLL takes its own backward pass first, which keeps the peak
  memory of that micro-step at that of a plain update's;
- with `cpu_memory_release` on CPU, memory freed between generation and update goes back to the system;
- `_generate_single_turn` prefills what its prompts share once (a rollout prompt's G copies, the instruction
  every analysis or replay prompt begins with; `melrl.shared_prefix`) and decodes few sequences weight-major on
  CPU (`melrl.cpu_decoding`), outside the autocast of `bf16`/`fp16` mixed precision there;
- `_get_per_token_logps_and_entropies` scores completions from plain logits on CPU, where TRL's tiled LM head
  (written for Triton) scores every prompt position as well and takes 5-8x longer;
- `training_step` skips the update of a step whose loss is not finite (logged, never saved);
- `_save_checkpoint` writes each checkpoint into a staging folder and renames it into place when complete;
- `experiences.jsonl` and `metrics.jsonl` are written in `output_dir`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from accelerate.utils import DistributedType, gather_object
from transformers import TrainerCallback
from transformers.training_args import OptimizerNames
from trl import GRPOTrainer
from trl.trainer.utils import pad

from . import cpu_memory
from .algorithms import compute_advantages, log_probs_and_entropy, rft_loss_sum, sequence_mean_nll, token_log_probs
from .config import MELConfig
from .cpu_decoding import fast_cpu_decoding, without_mixed_precision
from .experience import retention_ratio, select_pairs
from .jsonl import JsonlWriter
from .meta_phase import MetaExperienceJob, build_jobs, judge_analysis
from .nll_packing import Pack, pack, packable, packed_attention, packed_batch, packed_nll
from .prompts import ANSWER_FORMAT, render
from .rewards import make_accuracy_reward
from .runs import COMPLETE_MARKER, EXPERIENCES_FILE, METRICS_FILE
from .shared_prefix import shared_prefix_generation
from .verifier import verify_batch

logger = logging.getLogger("melrl.trainer")

PHASES = ("rollout", "scoring", "analysis", "replay", "update")
# DeepSpeed and FSDP reduce gradients in every backward call and LOMO steps in it: there the NLL joins the
# update's backward pass instead of taking its own.
OWN_NLL_BACKWARD = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


class MELTrainer(GRPOTrainer):
    """GRPO with Meta-Experience Learning. Takes the arguments of `trl.GRPOTrainer` with a `MELConfig`.

    `reward_funcs` defaults to the project's verifier-based accuracy reward for `args.prompt_template`. A rollout
    counts as correct when the reward function named `accuracy` gives it 1 (or, with none of that name, when the
    total reward reaches 1). The training dataset needs `problem` and `answer` columns beside `prompt`.
    """

    _tag_names = ["trl", "grpo", "melrl"]

    def __init__(self, model, reward_funcs=None, args: MELConfig | None = None, **kwargs):
        if args is None:
            raise ValueError("MELTrainer needs a MELConfig (args=MELConfig(...))")
        if reward_funcs is None:
            reward_funcs = [make_accuracy_reward(ANSWER_FORMAT[args.prompt_template], args.verifier_timeout)]
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        self._check_columns(kwargs.get("train_dataset"))
        self._answer_format = ANSWER_FORMAT[args.prompt_template]
        self._rollout: dict | None = None
        self._nll_slices: dict[int, dict] = {}  # micro-step slice -> NLL batch of this rank
        self._nll_global_count = 0
        self._step_stats = _StepStats()
        self._skip_update = False
        self._checkpoint_staging: str | None = None
        self._run_dir = Path(args.output_dir)
        self._experience_writer = None
        self._metrics_writer = None
        if self.accelerator.is_main_process:
            self._run_dir.mkdir(parents=True, exist_ok=True)
            self._experience_writer = JsonlWriter(self._run_dir / EXPERIENCES_FILE)
            self._metrics_writer = JsonlWriter(self._run_dir / METRICS_FILE)
        self.add_callback(_RunFilesCallback(self))

    def _check_columns(self, dataset) -> None:
        if not self.args.meta_experience or dataset is None or not hasattr(dataset, "column_names"):
            return
        missing = {"prompt", "problem", "answer"} - set(dataset.column_names)
        if missing:
            raise ValueError(
                f"the training dataset lacks the column(s) {sorted(missing)}; MEL needs the problem text and the "
                "gold answer beside the prompt (melrl.train.build_train_dataset makes them)"
            )

    # ---------------------------------------------------------------- rollouts and scoring

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        start = time.perf_counter()
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._step_stats.time["scoring"] += time.perf_counter() - start
        self._rollout = {"inputs": inputs, "completion_ids": completion_ids_list, "rewards": rewards_per_func}
        return rewards_per_func

    def _total_rewards(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """(B, n_funcs) -> (B,) weighted sum of the reward functions, as TRL forms it; NaN counts as 0."""
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        return torch.nan_to_num((rewards_per_func * weights).nansum(dim=1), nan=0.0)

    def _correct(self, rewards_per_func: torch.Tensor) -> list[bool]:
        if "accuracy" in self.reward_func_names:
            column = torch.nan_to_num(rewards_per_func[:, self.reward_func_names.index("accuracy")], nan=0.0)
        else:
            column = self._total_rewards(rewards_per_func)
        return (column >= 1.0 - 1e-6).tolist()

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        release = self.args.cpu_memory_release and self.accelerator.device.type == "cpu"
        if release:
            cpu_memory.generation_phase()
        try:
            return self._generate_score_and_analyse(inputs)
        finally:
            if release:
                cpu_memory.update_phase()

    def _generate_score_and_analyse(self, inputs):
        stats = self._step_stats
        scoring_before = stats.time["scoring"]
        start = time.perf_counter()
        output = super()._generate_and_score_completions(inputs)
        stats.time["rollout"] += time.perf_counter() - start - (stats.time["scoring"] - scoring_before)

        rollout, self._rollout = self._rollout, None
        correct = self._correct(rollout["rewards"])
        group = self.num_generations
        stats.add(
            reward_sum=self._total_rewards(rollout["rewards"]).sum().item(),
            rollouts=len(correct),
            groups=len(correct) // group,
            mixed_groups=sum(0 < sum(correct[i : i + group]) < group for i in range(0, len(correct), group)),
            rollout_prompt_tokens=self.accelerator.gather(output["prompt_mask"].sum().reshape(1)).sum().item(),
            rollout_tokens=self.accelerator.gather(output["completion_mask"].sum().reshape(1)).sum().item(),
        )
        if self.args.algorithm != "grpo":
            self._replace_advantages(output, rollout["rewards"], correct)
        self._nll_slices, self._nll_global_count = {}, 0
        if self.args.meta_experience:
            self._meta_experience_phase(rollout, correct)
        return output

    def _replace_advantages(self, output: dict, rewards_per_func: torch.Tensor, correct: list[bool]) -> None:
        """Advantages of the base algorithm, computed on the global batch and sliced back to this process."""
        device = output["advantages"].device
        if self.args.algorithm == "rft":
            rewards = torch.tensor(correct, dtype=torch.float32)
        else:
            rewards = self._total_rewards(rewards_per_func)
        advantages = compute_advantages(rewards.cpu(), self.num_generations, self.args.algorithm)
        local = output["advantages"].size(0)
        start = self.accelerator.process_index * local
        output["advantages"] = advantages[start : start + local].to(device)
        if self.args.algorithm == "rft":
            correct_rows = output["advantages"]  # (B,) 1 for a correct rollout
            output["rft_correct"] = correct_rows
            local_tokens = (output["completion_mask"].sum(dim=1) * correct_rows).sum().reshape(1)
            output["rft_tokens"] = self.accelerator.gather(local_tokens).sum()  # scalar: kept whole by the split

    # ---------------------------------------------------------------- meta-experience phase

    def _meta_experience_phase(self, rollout: dict, correct: list[bool]) -> None:
        """Construct, check and validate meta-experiences for this generation batch (same result on every rank)."""
        args, stats = self.args, self._step_stats
        inputs = rollout["inputs"]
        problems = gather_object([x["problem"] for x in inputs])
        golds = gather_object([str(x["answer"]) for x in inputs])
        ids = gather_object([str(x.get("id", "")) for x in inputs])
        completion_ids = gather_object([list(c) for c in rollout["completion_ids"]])
        step = self.state.global_step + 1  # the optimizer step these meta-experiences are trained in
        seed = args.seed if args.pair_seed is None else args.pair_seed
        pairs = select_pairs(correct, self.num_generations, args.max_pairs_per_prompt, seed=seed, step=step)
        stats.add(pairs=len(pairs))
        if not pairs:
            return

        start = time.perf_counter()
        jobs = build_jobs(
            pairs, problems, golds, ids, completion_ids, self.processing_class, args.analysis_max_prompt_length
        )
        analyses = self._generate_distributed([job.analysis_prompt_ids for job in jobs], args.analysis_max_new_tokens)
        eos = set(self.eos_token_ids)
        for job, generated in zip(jobs, analyses, strict=True):
            job.analysis_ids = generated
            job.analysis = self.processing_class.decode(generated, skip_special_tokens=True)
            job.truncated = not generated or generated[-1] not in eos
            judge_analysis(job, leak_check=args.leak_check)
        stats.time["analysis"] += time.perf_counter() - start
        stats.add(
            constructed=len(jobs),
            truncated=sum(j.truncated for j in jobs),
            parsed=sum(j.parsed for j in jobs),
            leaked=sum(bool(j.leaks) for j in jobs),
            analysis_prompt_tokens=sum(len(j.analysis_prompt_ids) for j in jobs),
            analysis_tokens=sum(len(j.analysis_ids) for j in jobs),
        )

        start = time.perf_counter()
        candidates = [job for job in jobs if job.parsed and not job.leaks]
        self._replay(candidates)
        stats.time["replay"] += time.perf_counter() - start

        kept = [job for job in jobs if job.kept]
        stats.add(replayed=len(candidates), kept=len(kept), nll_tokens=sum(len(j.analysis_ids) for j in kept))
        if self.accelerator.is_main_process:
            for job in jobs:
                self._experience_writer.append(job.record(step))
        self._assign_nll(kept)

    def _replay(self, candidates: list[MetaExperienceJob]) -> None:
        samples = self.args.replay_samples
        if not candidates:
            return
        prompt_texts = [job.replay_prompt(self.args.prompt_template) for job in candidates for _ in range(samples)]
        prompt_ids, _, _ = self._tokenize_prompts([render(self.processing_class, text) for text in prompt_texts])
        generated = self._generate_distributed(list(prompt_ids), self.args.replay_budget)
        texts = self.processing_class.batch_decode(generated, skip_special_tokens=True)
        golds = [job.gold for job in candidates for _ in range(samples)]
        verdicts = verify_batch(texts, golds, answer_format=self._answer_format, timeout=self.args.verifier_timeout)
        self._step_stats.add(replay_prompt_tokens=sum(map(len, prompt_ids)), replay_tokens=sum(map(len, generated)))
        for i, job in enumerate(candidates):
            chunk = slice(i * samples, (i + 1) * samples)
            job.set_replays(texts[chunk], verdicts[chunk], self._answer_format, self.args.replay_threshold)

    @contextmanager
    def _generation_budget(self, max_new_tokens: int):
        """Give one generate call its own token budget on whichever engine makes the rollouts."""
        saved = []
        targets = [(getattr(self, "generation_config", None), "max_new_tokens")]
        if getattr(self, "generation_kwargs", None) is not None:
            targets.append((self.generation_kwargs, "max_new_tokens"))
        if self.use_vllm:
            targets.append((self.vllm_generation, "max_completion_length"))
        for target, name in targets:
            if target is None:
                continue
            if isinstance(target, dict):
                saved.append((target, name, target.get(name)))
                target[name] = max_new_tokens
            else:
                saved.append((target, name, getattr(target, name)))
                setattr(target, name, max_new_tokens)
        try:
            yield
        finally:
            for target, name, value in saved:
                if isinstance(target, dict):
                    target[name] = value
                else:
                    setattr(target, name, value)

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        # Every transformers generation of the step (rollouts, analyses, replays) prefills what its prompts share
        # once, and decodes the fast way on CPU, in the weights' dtype even under mixed precision.
        model = self.accelerator.unwrap_model(self.model_wrapped)
        with (fast_cpu_decoding(self.model, sequences=len(prompt_ids), enabled=not self.use_vllm),
              without_mixed_precision(model), shared_prefix_generation(model, enabled=not self.use_vllm)):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)

    def _generate_distributed(self, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Generate one completion per prompt, spreading the prompts over the ranks; every rank gets all results.

        Every rank makes exactly one generate call with the same number of prompts (padded with a copy of a real
        prompt), so vLLM server mode, ZeRO-3 and FSDP stay in step.
        """
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        mine = list(range(rank, len(prompt_ids), world))
        per_rank = -(-len(prompt_ids) // world)
        local = [prompt_ids[i] for i in mine] + [prompt_ids[0]] * (per_rank - len(mine))
        with self._generation_budget(max_new_tokens):
            completions, _ = self._generate_single_turn(local, None, {}, 1)
        gathered = gather_object([(i, list(c)) for i, c in zip(mine, completions)])
        results: list[list[int]] = [[] for _ in prompt_ids]
        for i, ids in gathered:
            results[i] = ids
        return results

    # ---------------------------------------------------------------- internalization

    @property
    def _internalizing(self) -> bool:
        return self.args.meta_experience and self.args.mel_coef > 0

    def _assign_nll(self, kept: list[MetaExperienceJob]) -> None:
        """Spread the kept meta-experiences, in packs where `_packs_nll` or one row each, over ranks and micro-step
        slices; pad slices other ranks use."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        slices = self.args.steps_per_generation
        self._nll_global_count = len(kept)
        if not kept or not self._internalizing:
            return
        contexts, targets = [j.analysis_prompt_ids for j in kept], [j.analysis_ids for j in kept]
        packed = self._packs_nll
        if packed:
            units = pack(contexts, targets, self.args.nll_pack_budget)
            context_tokens = sum(p.length - sum(map(len, p.targets)) for p in units)
        else:
            units, context_tokens = kept, sum(map(len, contexts))
        self._step_stats.add(nll_context_tokens=context_tokens)
        used: dict[int, list] = {}
        for k, unit in enumerate(units):
            slot = (k // world) % slices
            used.setdefault(slot, [])
            if k % world == rank:
                used[slot].append(unit)
        for slot, rank_units in used.items():
            if packed:
                batch = _packed_nll_batch(rank_units, units[0], self.accelerator.device)
            else:
                batch = _nll_batch(rank_units, self._tokenizer.pad_token_id, kept[0], self.accelerator.device)
            self._nll_slices[slot] = batch

    @property
    def _packs_nll(self) -> bool:
        """Packed rows need the NLL's backward pass (whose recompute, under checkpointing, attends as the forward
        did) to run within `packed_attention`: with its own backward only."""
        return self.args.nll_packing and packable(self.model.config) and self._own_nll_backward()

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **model_extras):
        """TRL's per-token log-probabilities and entropies of the last `logits_to_keep` tokens; on CPU, for text-only
        models without MoE auxiliary loss or an fp32 LM head cast, from plain (B, C, V) logits."""
        plain = (input_ids.device.type == "cpu" and not compute_aux_loss and not self.args.cast_lm_head_to_fp32
                 and all(value is None for value in model_extras.values()))
        if not plain:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **model_extras)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
            with self.accelerator.autocast():
                batch_logps, batch_entropies = log_probs_and_entropy(
                    self._completion_logits(model, ids, mask, logits_to_keep), ids[:, -logits_to_keep:],
                    self.temperature, entropy=compute_entropy, entropy_grad=self._entropy_bonus_enabled)
            padding = mask[:, -logits_to_keep:] == 0  # TRL scores padding as 0
            logps.append(batch_logps.masked_fill(padding, 0.0))
            if compute_entropy:
                entropies.append(batch_entropies.masked_fill(padding, 0.0))
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    @staticmethod
    def _completion_logits(model, input_ids, attention_mask, completion_length: int) -> torch.Tensor:
        """(B, C, V) temperature-1 logits predicting the last `completion_length` tokens of each row."""
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=completion_length + 1,
                        use_cache=False)
        return outputs.logits[:, :-1, :]

    def _compute_loss(self, model, inputs):
        batch = self._micro_step_nll_batch()
        own_backward = batch is not None and self._own_nll_backward()
        if own_backward:
            # Backward before the update's graph is built: one backward over both graphs would hold a second
            # full set of parameter gradients until both branches reach each parameter.
            attention = packed_attention(self.model) if "layout" in batch else nullcontext()
            with self.accelerator.no_sync(model), attention:
                mel_loss = self._mel_loss(model, batch)
                start = time.perf_counter()
                self.accelerator.backward(mel_loss)
                self._step_stats.time["nll"] += time.perf_counter() - start
            mel_loss = mel_loss.detach()
        if self.args.algorithm == "rft" and "rft_correct" in inputs:
            loss = self._rft_loss(model, inputs)
        else:
            loss = super()._compute_loss(model, inputs)
        if batch is None:
            return loss
        if not own_backward:
            mel_loss = self._mel_loss(model, batch)  # its backward joins the update's
        return loss + mel_loss

    def _micro_step_nll_batch(self) -> dict | None:
        """This rank's NLL batch for the current micro-step, or None."""
        if not (self.model.training and self._internalizing and self._nll_slices):
            return None
        return self._nll_slices.get(self._step % self.args.steps_per_generation)

    def _own_nll_backward(self) -> bool:
        """Whether the NLL takes its own backward pass (one process, or DDP under `no_sync`)."""
        return (self.accelerator.distributed_type in OWN_NLL_BACKWARD
                and self.args.optim not in (OptimizerNames.LOMO, OptimizerNames.ADALOMO))

    def _mel_loss(self, model, batch: dict) -> torch.Tensor:
        """`mel_coef` x the NLL of this micro-step's meta-experiences, scaled so that the micro-steps of all
        ranks add up to the mean over every kept meta-experience of the generation batch."""
        start = time.perf_counter()
        nll = self._weighted_nll(model, batch)
        world = self.accelerator.num_processes
        self._step_stats.add(nll_sum=nll.detach().sum().item(), nll_count=batch["weight"].sum().item())
        self._step_stats.time["nll"] += time.perf_counter() - start
        return self.args.mel_coef * nll.sum() * world / self._nll_global_count

    def _weighted_nll(self, model, batch: dict) -> torch.Tensor:
        """(meta-experiences,) mean NLL of each meta-experience of `batch` times its weight."""
        if "layout" in batch:  # packed
            nll = packed_nll(model, batch) * batch["weight"]
        else:
            logits = self._completion_logits(model, batch["input_ids"], batch["attention_mask"],
                                             batch["targets"].size(1))
            nll = sequence_mean_nll(logits, batch["targets"], batch["mask"]) * batch["weight"]  # (B,)
        return nll

    def _rft_loss(self, model, inputs) -> torch.Tensor:
        """NLL of the correct rollouts' tokens over the correct-token count of the whole generation batch."""
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        logits = self._completion_logits(model, input_ids, attention_mask, completion_ids.size(1))
        logps = token_log_probs(logits, completion_ids)  # (B, C)
        loss_sum = rft_loss_sum(logps, completion_mask, inputs["rft_correct"])
        tokens = inputs["rft_tokens"].clamp(min=1.0)
        # Every micro-step of the generation batch adds its share; ranks are averaged by the backward pass.
        loss = loss_sum * self.accelerator.num_processes / tokens
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["rft/correct_fraction"].append(inputs["rft_correct"].float().mean().item())
        return loss

    # ---------------------------------------------------------------- step accounting

    def training_step(self, model, inputs, num_items_in_batch):
        stats = self._step_stats
        generation_before = sum(stats.time[p] for p in ("rollout", "scoring", "analysis", "replay"))
        start = time.perf_counter()
        output = super().training_step(model, inputs, num_items_in_batch)
        self._guard_non_finite(model, output)
        generation = sum(stats.time[p] for p in ("rollout", "scoring", "analysis", "replay")) - generation_before
        stats.time["update"] += time.perf_counter() - start - generation
        return output

    def _guard_non_finite(self, model, loss: torch.Tensor) -> None:
        """Once any rank sees a non-finite loss, drop the gradients of the whole accumulation window.

        With every gradient set to None the optimizer leaves every parameter as it is, so the step changes nothing
        and nothing non-finite can reach a saved checkpoint.
        """
        bad = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0], device=self.accelerator.device)
        if self.accelerator.reduce(bad, reduction="sum").item() > 0 and not self._skip_update:
            logger.warning("step %d: non-finite loss (%s); this step's update is skipped",
                           self.state.global_step + 1, loss.item())
            self._skip_update = True
        if self._skip_update:
            model.zero_grad(set_to_none=True)
            if self.optimizer is not None:
                self.optimizer.zero_grad(set_to_none=True)

    def _get_output_dir(self, trial) -> str:
        return self._checkpoint_staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """Save into `<output_dir>/.staging`, mark it complete, then rename it to `checkpoint-N` in one step."""
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = super()._get_output_dir(trial)
        name = f"checkpoint-{self.state.global_step}"
        self._checkpoint_staging = os.path.join(run_dir, ".staging")
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpoint_staging = None
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            staged, final = os.path.join(run_dir, ".staging", name), os.path.join(run_dir, name)
            marker = os.path.join(staged, COMPLETE_MARKER)
            with open(marker + ".tmp", "w") as f:
                json.dump({"global_step": self.state.global_step}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(marker + ".tmp", marker)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(staged, final)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _finish_step(self) -> dict:
        """Reduce this step's NLL over ranks and return the metrics line (all ranks must call it)."""
        stats, self._step_stats = self._step_stats, _StepStats()
        stats.add(skipped_update=int(self._skip_update))
        self._skip_update = False
        totals = torch.tensor([stats.counts.get("nll_sum", 0.0), stats.counts.get("nll_count", 0.0)],
                              device=self.accelerator.device)
        nll_sum, nll_count = self.accelerator.reduce(totals, reduction="sum").tolist()
        return stats.line(self.state.global_step, nll_sum, nll_count)


# Token counts per step: what each phase reads (prompt, context) and what it generates or trains.
TOKEN_COUNTS = (("rollout", "prompt_tokens"), ("rollout", "tokens"), ("analysis", "prompt_tokens"),
                ("analysis", "tokens"), ("replay", "prompt_tokens"), ("replay", "tokens"),
                ("nll", "context_tokens"), ("nll", "tokens"))


class _StepStats:
    """Sums over one optimizer step (counts are already global: they come from gathered data)."""

    def __init__(self):
        self.counts: dict[str, float] = {}
        self.time: dict[str, float] = {phase: 0.0 for phase in (*PHASES, "nll")}

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.counts[key] = self.counts.get(key, 0) + value

    def line(self, step: int, nll_sum: float, nll_count: float) -> dict:
        c = self.counts
        get = lambda key: int(c.get(key, 0))  # noqa: E731
        return {
            "step": step,
            "reward_mean": c.get("reward_sum", 0.0) / max(get("rollouts"), 1),
            "mixed_group_fraction": get("mixed_groups") / max(get("groups"), 1),
            **{key: get(key) for key in ("rollouts", "groups", "mixed_groups", "pairs", "constructed", "truncated",
                                         "parsed", "leaked", "replayed", "kept")},
            "retention_ratio": retention_ratio(get("kept"), get("constructed")),
            "nll": nll_sum / nll_count if nll_count else None,
            "skipped_update": bool(get("skipped_update")),
            **{f"{phase}_{kind}": get(f"{phase}_{kind}") for phase, kind in TOKEN_COUNTS},
            **{f"time_{phase}": round(seconds, 4) for phase, seconds in self.time.items()},
        }


def _nll_batch(jobs: list[MetaExperienceJob], pad_id: int, filler: MetaExperienceJob, device) -> dict:
    """Left-padded analysis prompts followed by right-padded meta-experiences; a rank with none gets one
    zero-weight row so that it still runs the forward and backward pass the others run."""
    weight = [1.0] * len(jobs)
    if not jobs:
        jobs, weight = [filler], [0.0]
    prompts = [torch.tensor(j.analysis_prompt_ids) for j in jobs]
    targets = [torch.tensor(j.analysis_ids) for j in jobs]
    prompt_ids = pad(prompts, padding_value=pad_id, padding_side="left")
    prompt_mask = pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left")
    target_ids = pad(targets, padding_value=pad_id, padding_side="right")
    target_mask = pad([torch.ones_like(t) for t in targets], padding_value=0, padding_side="right")
    return {
        "input_ids": torch.cat([prompt_ids, target_ids], dim=1).to(device),
        "attention_mask": torch.cat([prompt_mask, target_mask], dim=1).to(device),
        "targets": target_ids.to(device),
        "mask": target_mask.to(device),
        "weight": torch.tensor(weight, device=device),
    }


def _packed_nll_batch(packs: list[Pack], filler: Pack, device) -> dict:
    """One row of `packs` (`melrl.nll_packing.packed_batch`) with a weight per meta-experience; a rank with none
    gets the zero-weight `filler` so that it still runs the forward and backward pass the others run."""
    weight = 1.0
    if not packs:
        packs, weight = [filler], 0.0
    batch = packed_batch(packs, device)
    batch["weight"] = torch.full((sum(len(p.targets) for p in packs),), weight, device=device)
    return batch


class _RunFilesCallback(TrainerCallback):
    def __init__(self, trainer: MELTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        line = self.trainer._finish_step()
        if self.trainer._metrics_writer is not None:
            self.trainer._metrics_writer.append(line)
        # Also through TRL's logging, hence to every `report_to` backend and the console.
        for key, value in line.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.trainer._metrics["train"][f"mel/{key}"].append(float(value))
