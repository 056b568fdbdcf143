"""A MEL run on the tiny model for 1 or N processes (under `accelerate launch`), driven by the distributed tests.

Generation is replaced by a deterministic stand-in that depends only on a rollout's prompt and its global row,
so a 1-process and a 2-process run see the same rollouts, analyses and replays for the same global batch; every
analysis is judged parsed and the replays verify for every other text, so meta-experiences are kept. The verifier
stand-in gives the opposite verdicts on every rank but the first, as a verifier that times out on one rank only
would: every rank must still keep the same meta-experiences, the first rank's.
The training config is built before the model loads, as `melrl train` does, so that the shipped accelerate kits'
loading settings (ZeRO-3's `zero3_init_flag`, FSDP's `fsdp_cpu_ram_efficient_loading`) take effect.
Each rank writes `rank{R}.json`: how its model loaded, its generate-call count, NLL forward count, losses, the
advantages of its rows keyed by global row (a number per rollout, or the list of its valid tokens' advantages when
they are per token), the pairs it kept per generation batch, under DDP the gradient all-reduce rounds per optimizer
step (counted by a communication hook), and the final weights (gathered under ZeRO-3 and FSDP) as a checksum, a
sample of each tensor and their largest change from the initial weights.

Usage: python -m tests.mp_run MODEL_DIR OUTPUT_DIR GLOBAL_BATCH [--algorithm A] [--beta B] [--lora]
       [--checkpointing] [--nan-at-step N] [--max-steps N]
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel
from transformers import TrainerCallback

import melrl.training.trainer as trainer_module
from melrl.cli.train import RunArguments, end_processes
from melrl.training.trainer import MELTrainer
from tests.test_trainer import fake_judge, make_config, make_dataset, parity_accuracy


def fake_tokens(key: list[int], length: int, vocab: int) -> list[int]:
    digest = hashlib.sha256(json.dumps(key).encode()).digest()
    return [100 + digest[i % len(digest)] * (i + 1) % (vocab - 200) for i in range(length)]


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("global_batch", type=int)
    parser.add_argument("--algorithm", default="grpo")
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (in the reward under reinforce_pp*)")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--nan-at-step", type=int, default=0, help="make the loss of this optimizer step NaN")
    parser.add_argument("--max-steps", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(1)
    trainer_module.judge_analysis = fake_judge
    rank = int(os.environ.get("RANK", "0"))  # set by the launcher
    trainer_module.verify_batch = lambda texts, golds, **kw: [(len(t) + rank) % 2 == 0 for t in texts]
    counts = {"generate": 0, "nll_forward": 0}

    def generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        counts["generate"] += 1
        rank, vocab = self.accelerator.process_index, len(self.processing_class)
        if num_generations > 1:  # rollouts: identical prompts differ by their global row
            rows = [rank * len(prompt_ids) + i for i in range(len(prompt_ids))]
            keys = [[self.state.global_step, row] + list(ids) for row, ids in zip(rows, prompt_ids)]
        else:  # analysis and replay: the prompt alone decides
            keys = [list(ids) for ids in prompt_ids]
        completions = [fake_tokens(key, 3 + int(hashlib.md5(str(key).encode()).hexdigest(), 16) % 6, vocab)
                       for key in keys]
        return [c + [self.eos_token_ids[0]] for c in completions], None

    MELTrainer._generate_single_turn = generate
    original_mel_loss = MELTrainer._mel_loss

    def counting_mel_loss(self, model, batch):
        counts["nll_forward"] += 1
        return original_mel_loss(self, model, batch)

    MELTrainer._mel_loss = counting_mel_loss
    advantages = []
    original_generate_and_score = MELTrainer._generate_and_score_completions

    def recording_advantages(self, inputs):
        output = original_generate_and_score(self, inputs)
        if self.model.training:
            start = self.accelerator.process_index * len(inputs)
            values, mask = output["advantages"], output["completion_mask"].bool()
            rows = values.tolist() if values.dim() == 1 else [row[m].tolist() for row, m in zip(values, mask)]
            advantages.append({start + i: a for i, a in enumerate(rows)})
        return output

    MELTrainer._generate_and_score_completions = recording_advantages
    kept_pairs = []
    original_phase = MELTrainer._meta_experience_phase

    def recording_kept(self, rollouts):
        kept = original_phase(self, rollouts)
        kept_pairs.append([[job.pair.group, job.pair.correct, job.pair.incorrect] for job in kept])
        return kept

    MELTrainer._meta_experience_phase = recording_kept
    losses = []
    original_loss = MELTrainer._compute_loss

    def recording_loss(self, model, inputs):
        loss = original_loss(self, model, inputs)
        if args.nan_at_step and self.state.global_step + 1 == args.nan_at_step:
            loss = loss * float("nan")
        losses.append(loss.item())
        return loss

    MELTrainer._compute_loss = recording_loss

    from melrl.models import load_model_and_tokenizer

    initial = load_file(Path(args.model_dir) / "model.safetensors")  # the loaded model may be partitioned
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher
    config = make_config(
        Path(args.output_dir).parent, output_dir=args.output_dir, max_steps=args.max_steps, learning_rate=1e-2,
        per_device_train_batch_size=args.global_batch // world, max_pairs_per_prompt=2, loss_type="grpo",
        shuffle_dataset=False, algorithm=args.algorithm, beta=args.beta, gradient_checkpointing=args.checkpointing,
    )
    model, tokenizer = load_model_and_tokenizer(args.model_dir)  # after the config, as in `melrl train`
    loaded = loaded_as(model)
    peft_config = RunArguments(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0).peft_config() \
        if args.lora else None
    trainer = MELTrainer(model=model, reward_funcs=[parity_accuracy], args=config, train_dataset=make_dataset(),
                         processing_class=tokenizer, peft_config=peft_config)
    allreduce = AllReduceRounds(trainer)
    trainer.add_callback(allreduce)
    trainer.train()
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # gathered under ZeRO-3 and FSDP
    record = {**counts, "losses": losses, "advantages": advantages, "kept": kept_pairs,
              "allreduce_rounds": allreduce.rounds, "loaded": loaded}
    if state:
        names = [name for name in sorted(state) if state[name].numel()]  # ZeRO-3 gathers a tied copy empty
        params = torch.cat([state[name].detach().float().flatten().cpu() for name in names])
        record |= {"param_sum": params.double().sum().item(),
                   "param_hash": hashlib.sha256(params.numpy().tobytes()).hexdigest(),
                   "samples": {name: state[name].detach().float().flatten()[::97][:64].tolist() for name in names},
                   "lora_params": sum(state[name].numel() for name in names if "lora_" in name),
                   "max_change": max((float((state[n].float().cpu() - initial[n].float()).abs().max())
                                      for n in names if n in initial), default=None)}
    Path(args.output_dir, f"rank{rank}.json").write_text(json.dumps(record))
    end_processes(trainer)
    return 0


def loaded_as(model) -> str:
    """How the weights came in: `partitioned` by ZeRO-3's init, `empty` (zeros, filled from the first rank's when
    FSDP shards the model: its CPU-RAM-efficient loading on the other ranks) or `whole`."""
    params = list(model.parameters())
    if hasattr(params[0], "ds_id"):
        return "partitioned"
    return "empty" if not any(p.any() for p in params) else "whole"


class AllReduceRounds(TrainerCallback):
    """Under DDP, the gradient all-reduce rounds of each optimizer step (a round: every bucket once), counted by a
    communication hook that all-reduces as DDP's default does."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.rounds: list[int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if isinstance(self.trainer.model_wrapped, DistributedDataParallel):
            self.rounds = []
            self.trainer.model_wrapped.register_comm_hook(None, self.hook)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.rounds is not None:
            self.rounds.append(0)

    def hook(self, process_group, bucket):
        if bucket.is_last():
            self.rounds[-1] += 1
        return allreduce_hook(process_group, bucket)


if __name__ == "__main__":
    sys.exit(main())
