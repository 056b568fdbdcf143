"""A small MEL run on the tiny model that can kill itself mid-step and be resumed (driven by test_reliability).

Usage: python -m tests.resume_run MODEL_DIR OUTPUT_DIR [--kill-at-step N] [--resume]
"""

import argparse
import os
import signal
import sys
from pathlib import Path

import torch

import melrl.training.trainer as trainer_module
from melrl.training.resume import checkpoint_step, resolve_checkpoint, rewind_run_files
from tests.test_trainer import fake_judge, make_trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    trainer_module.judge_analysis = fake_judge
    # Replay verdicts from the replay text itself, so that they do not depend on call order.
    trainer_module.verify_batch = lambda texts, golds, **kw: [len(t) % 2 == 0 for t in texts]

    checkpoint = resolve_checkpoint(args.output_dir, True) if args.resume else None
    rewind_run_files(args.output_dir, checkpoint_step(checkpoint) if checkpoint else 0)
    trainer = make_trainer(
        args.model_dir, Path(args.output_dir).parent, max_steps=4, save_strategy="steps", save_steps=1,
        output_dir=args.output_dir, learning_rate=1e-2, max_pairs_per_prompt=2,
    )
    if args.kill_at_step is not None:
        original = trainer._compute_loss

        def loss_then_die(model, inputs):
            if trainer.state.global_step + 1 == args.kill_at_step:  # experiences of this step are written already
                os.kill(os.getpid(), signal.SIGKILL)
            return original(model, inputs)

        trainer._compute_loss = loss_then_die
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(os.path.join(args.output_dir, "final"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
