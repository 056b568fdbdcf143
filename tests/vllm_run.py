"""A MEL run on the tiny model whose generation goes through TRL's own vLLM code (`VLLMGeneration`, and
`VLLMClient` in server mode) to the CPU stand-in of vLLM in tests/vllm_standin, which the caller puts on
PYTHONPATH; 1 process, or N under `accelerate launch`.

Rewards are the parity stand-in (mixed groups on a random model) and replays verify for texts of even length, so
meta-experiences are both kept and dropped; analyses are judged for real. vLLM's settings are those `melrl train`
makes (`name_vllm_stop_tokens`, `vllm_max_model_length`). In server mode the two calls that need NCCL are replaced
(`VLLMClient.init_communicator`, and `update_named_params`, which records what it was given and leaves the server's
weights as they are); everything else, HTTP included, is TRL's.

Each rank writes `rank{R}.json`: its generate calls (prompts, completions and the policy's weight checksum), TRL's
log history (its importance-sampling metrics compare the engine's log-probabilities with the policy's), the final
weight checksum, the weight pushes of server mode, and (colocate, 1 process, no sleep mode) the engine's greedy
completion of one prompt before and after one more weight sync, beside the policy's own.

Usage: python -m tests.vllm_run MODEL_DIR OUTPUT_DIR [--sleep] [--guidance] [--server URL] [--max-steps N]
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

import melrl.training.trainer as trainer_module
from melrl.models import load_model_and_tokenizer
from melrl.cli.train import end_processes, name_vllm_stop_tokens
from melrl.training.trainer import MELTrainer
from tests.test_trainer import make_config, make_dataset, parity_accuracy

GLOBAL_BATCH = 8
ANALYSIS_BUDGET, GUIDED_ANALYSIS_BUDGET, REPLAY_BUDGET = 10, 96, 8  # tokens; rollouts: make_config's 12


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--sleep", action="store_true", help="vllm_enable_sleep_mode")
    parser.add_argument("--guidance", action="store_true", help="analysis_guidance: sections")
    parser.add_argument("--server", default=None, help="vllm_mode: server at this URL (else colocate)")
    parser.add_argument("--max-steps", type=int, default=2)
    return parser.parse_args(argv)


def checksum(model) -> float:
    return float(sum(param.detach().double().sum() for param in model.parameters()))


def replace_nccl_calls(pushes: list) -> None:
    from trl.generation.vllm_client import VLLMClient

    def init_communicator(self, device=0):
        pushes.append({"init_communicator": str(device)})

    def update_named_params(self, metadata, named_params):
        names = [name for name, _ in named_params]
        pushes.append({"metadata": [entry[0] for entry in metadata], "names": names})

    VLLMClient.init_communicator = init_communicator
    VLLMClient.update_named_params = update_named_params


def greedy_check(trainer, tokenizer) -> dict:
    """The engine's greedy completion of one prompt with the weights of the last sync, then after one more sync,
    and the policy's own: after the sync they agree, before it (the last optimizer step not pushed) they do not."""
    from vllm import SamplingParams

    ids = tokenizer("What is 3 + 4?")["input_ids"]
    params = SamplingParams(temperature=0.0, max_tokens=12)
    engine = trainer.vllm_generation.llm

    def engine_tokens():
        return list(engine.generate([{"prompt_token_ids": ids}], sampling_params=params, use_tqdm=False)[0]
                    .outputs[0].token_ids)

    stale = engine_tokens()
    trainer.vllm_generation.sync_weights()
    synced = engine_tokens()
    with torch.no_grad():
        policy = trainer.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12)[0, len(ids):]
    return {"stale": stale, "synced": synced, "policy": policy.tolist()}


def main(argv=None) -> int:
    args = parse(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(1)
    trainer_module.verify_batch = lambda texts, golds, **kw: [len(t) % 2 == 0 for t in texts]
    pushes: list = []
    if args.server:
        replace_nccl_calls(pushes)
    calls = []
    original = MELTrainer._generate_single_turn

    def recording(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        call = {"step": self.state.global_step, "prompts": [list(ids) for ids in prompt_ids],
                "num_generations": num_generations, "checksum": checksum(self.model)}
        completions, logprobs = original(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs)
        calls.append({**call, "completions": [list(ids) for ids in completions]})
        return completions, logprobs

    MELTrainer._generate_single_turn = recording

    model, tokenizer = load_model_and_tokenizer(args.model_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher
    mode = dict(vllm_mode="server", vllm_server_base_url=args.server, vllm_server_timeout=120) if args.server \
        else dict(vllm_mode="colocate", vllm_enable_sleep_mode=args.sleep)
    config = make_config(
        Path(args.output_dir).parent, output_dir=args.output_dir, max_steps=args.max_steps, learning_rate=1e-2,
        per_device_train_batch_size=GLOBAL_BATCH // world, max_pairs_per_prompt=2, loss_type="grpo",
        shuffle_dataset=False, use_vllm=True, vllm_max_model_length=1024, vllm_gpu_memory_utilization=0.3,
        analysis_guidance="sections" if args.guidance else "none",
        analysis_max_new_tokens=GUIDED_ANALYSIS_BUDGET if args.guidance else ANALYSIS_BUDGET,
        replay_max_new_tokens=REPLAY_BUDGET, **mode,
    )
    name_vllm_stop_tokens(config, model, tokenizer)  # as `melrl train`
    trainer = MELTrainer(model=model, reward_funcs=[parity_accuracy], args=config, train_dataset=make_dataset(),
                         processing_class=tokenizer)
    trainer.train()
    rank = trainer.accelerator.process_index
    record = {"calls": calls, "log_history": trainer.state.log_history, "final_checksum": checksum(trainer.model),
              "parameters": len(list(trainer.model.parameters())), "pushes": pushes}
    if not args.server and not args.sleep and world == 1:
        record["greedy"] = greedy_check(trainer, tokenizer)
    Path(args.output_dir, f"rank{rank}.json").write_text(json.dumps(record))
    end_processes(trainer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
