"""A MEL run on the tiny model for 1 or N processes (under `accelerate launch`), driven by test_distributed.

Generation is replaced by a deterministic stand-in that depends only on a rollout's prompt and its global row,
so a 1-process and a 2-process run see the same rollouts, analyses and replays for the same global batch.
Each rank writes `rank{R}.json`: its generate-call count, NLL forward count, losses and a parameter checksum.

Each rank also writes the advantages of its rows, keyed by the global row, for every generation batch.

Usage: python -m tests.mp_run MODEL_DIR OUTPUT_DIR GLOBAL_BATCH [ALGORITHM]
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

import melrl.training.trainer as trainer_module
from melrl.training.trainer import MELTrainer
from tests.test_trainer import fake_judge, make_trainer


def fake_tokens(key: list[int], length: int, vocab: int) -> list[int]:
    digest = hashlib.sha256(json.dumps(key).encode()).digest()
    return [100 + digest[i % len(digest)] * (i + 1) % (vocab - 200) for i in range(length)]


def main(argv=None) -> int:
    args = argv or sys.argv[1:]
    model_dir, output_dir, global_batch = args[:3]
    algorithm = args[3] if len(args) > 3 else "grpo"
    torch.set_num_threads(1)
    trainer_module.judge_analysis = fake_judge
    trainer_module.verify_batch = lambda texts, golds, **kw: [len(t) % 2 == 0 for t in texts]
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
            advantages.append({start + i: a for i, a in enumerate(output["advantages"].tolist())})
        return output

    MELTrainer._generate_and_score_completions = recording_advantages

    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher
    trainer = make_trainer(
        model_dir, Path(output_dir).parent, output_dir=output_dir, max_steps=3, learning_rate=1e-2,
        per_device_train_batch_size=int(global_batch) // world, max_pairs_per_prompt=2, loss_type="grpo",
        shuffle_dataset=False, algorithm=algorithm,
    )
    losses = []
    original_loss = MELTrainer._compute_loss

    def recording_loss(self, model, inputs):
        loss = original_loss(self, model, inputs)
        losses.append(loss.item())
        return loss

    MELTrainer._compute_loss = recording_loss
    trainer.train()
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    rank = trainer.accelerator.process_index
    Path(output_dir, f"rank{rank}.json").write_text(json.dumps({
        **counts, "losses": losses, "advantages": advantages, "param_sum": params.double().sum().item(),
        "param_hash": hashlib.sha256(params.numpy().tobytes()).hexdigest(), "params": params[:64].tolist(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
