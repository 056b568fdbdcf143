"""One MEL step on the tiny model with `analyst: endpoint`, under `accelerate launch` (driven by tests/test_analyst.py).

Every replay verifies (a stand-in verifier), so every analysis is kept and reaches the NLL. Each rank writes
`rank{R}.json`: the analyses it got (text, policy token ids, truncated) and the meta-experiences it kept.

Usage: python -m tests.analyst_mp_run MODEL_DIR OUTPUT_DIR BASE_URL
"""

import json
import os
import sys
from pathlib import Path

import torch

import melrl.training.trainer as trainer_module
from melrl.cli.train import end_processes
from melrl.models import load_model_and_tokenizer
from melrl.training.trainer import MELTrainer
from tests.chat_server import MODEL
from tests.test_trainer import make_config, make_dataset, parity_accuracy


def main(argv: list[str]) -> int:
    model_dir, output_dir, base_url = argv
    torch.set_num_threads(1)
    trainer_module.verify_batch = lambda texts, golds, **kw: [True] * len(texts)
    seen = {"analyses": [], "kept": []}
    write_analyses = trainer_module.write_analyses

    def recording(trainer, jobs):
        written = write_analyses(trainer, jobs)
        seen["analyses"] += [{"text": j.analysis, "ids": j.analysis_ids, "truncated": j.truncated} for j in written]
        return written

    trainer_module.write_analyses = recording
    original_phase = MELTrainer._meta_experience_phase

    def recording_kept(self, rollouts):
        kept = original_phase(self, rollouts)
        seen["kept"].append([[job.pair.correct, job.pair.incorrect, job.analysis] for job in kept])
        return kept

    MELTrainer._meta_experience_phase = recording_kept
    world = int(os.environ.get("WORLD_SIZE", "1"))
    config = make_config(Path(output_dir).parent, output_dir=output_dir, max_steps=1,
                         per_device_train_batch_size=8 // world, analyst="endpoint", analyst_base_url=base_url,
                         analyst_model=MODEL, analyst_timeout=10.0, analysis_max_new_tokens=200)
    model, tokenizer = load_model_and_tokenizer(model_dir)
    trainer = MELTrainer(model=model, reward_funcs=[parity_accuracy], args=config, train_dataset=make_dataset(),
                         processing_class=tokenizer)
    trainer.train()
    Path(output_dir, f"rank{trainer.accelerator.process_index}.json").write_text(json.dumps(seen))
    end_processes(trainer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
