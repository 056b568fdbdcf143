"""GPU memory per process and generation cost per step of the paper presets: the arithmetic behind docs/presets.md,
"Memory per preset" (both tables).

    .venv/bin/python tools/preset_memory.py            # the tables, in markdown
    .venv/bin/python tools/preset_memory.py --json     # the same numbers as JSON

An estimate from the presets' own settings and the Qwen3 architectures, not a measurement: every assumption is a
named constant below. The target is one node of 8 GPUs of 80 GB (H100 or A100; an H100 80GB shows 81,559 MiB =
79.6 GiB), DeepSpeed ZeRO-3 (`configs/accelerate/deepspeed_zero3.yaml`, as each preset's header says), gradient
checkpointing, bf16. GiB = 2**30 bytes throughout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "melrl" / "configs"
PAPER_PRESETS = (
    "qwen3_4b_grpo.yaml", "qwen3_4b_mel.yaml", "qwen3_8b_grpo.yaml", "qwen3_8b_mel.yaml", "qwen3_14b_grpo.yaml",
    "qwen3_14b_mel.yaml", "qwen3_8b_reinforce_pp.yaml", "qwen3_8b_reinforce_pp_me.yaml", "qwen3_8b_rft.yaml",
    "qwen3_8b_rft_me.yaml", "vllm_server_mel.yaml",
)
GIB = 2**30

# Qwen3 Base models as published (config.json of Qwen/Qwen3-{4B,8B,14B}-Base): head_dim 128, vocabulary 151,936,
# context 32,768; the 4B ties its input and output embeddings, the 8B and 14B do not.
ARCHITECTURES = {
    "Qwen/Qwen3-4B-Base": dict(layers=36, hidden=2560, heads=32, kv_heads=8, intermediate=9728, tied=True),
    "Qwen/Qwen3-8B-Base": dict(layers=36, hidden=4096, heads=32, kv_heads=8, intermediate=12288, tied=False),
    "Qwen/Qwen3-14B-Base": dict(layers=40, hidden=5120, heads=40, kv_heads=8, intermediate=17408, tied=False),
}
HEAD_DIM, VOCAB, MODEL_CONTEXT = 128, 151_936, 32_768

CARD_GIB = 79.6  # H100 80GB as nvidia-smi shows it (81,559 MiB); an A100 80GB shows 81,920 MiB
LONGEST_PROMPT = 1511  # tokens: the longest DAPO-Math-17k prompt, `qwen-boxed` template, Qwen3 chat template
REPLAY_INSTRUCTION = 140  # tokens of the Empirical Validation Prompt around the meta-experience and the question
OVERHEAD_GIB = 3.0  # per process: CUDA context, NCCL buffers, allocator fragmentation
VLLM_OTHER_GIB = 1.5  # vLLM's own activations (4,096 batched tokens, as TRL sets it), sampler, CUDA graphs
VLLM_ASLEEP_GIB = 1.0  # what a sleeping vLLM (level 2: weights and KV cache released) still holds
RECOMPUTE_FACTOR = 1.5  # one layer's saved tensors during its recomputation, plus their gradients in flight
DEEPSPEED_SUB_GROUP = 1e9  # ZeRO-3 sub_group_size: fp32 gradients are made one sub-group at a time at the step
SERVER_UTILIZATION = 0.9  # `trl vllm-serve --gpu_memory_utilization` (its default)


def parameters(a: dict) -> dict:
    """Parameter counts: embeddings, one decoder layer, total."""
    h, q, kv, i = a["hidden"], a["heads"] * HEAD_DIM, a["kv_heads"] * HEAD_DIM, a["intermediate"]
    layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h + 2 * HEAD_DIM  # attention, MLP, norms
    embeddings = VOCAB * h * (1 if a["tied"] else 2)
    return {"embedding": VOCAB * h, "layer": layer, "total": embeddings + a["layers"] * layer + h}


def activation_bytes_per_token(a: dict) -> dict:
    """Gradient checkpointing keeps each layer's input (hidden x 2 bytes per layer); the backward pass recomputes
    one layer at a time, whose saved tensors are 3 hidden, 4 query, 4 key/value and 4 MLP-width vectors per token
    (norm outputs and residual; q, k, v before and after their norms and rotary; attention output; gate, up, their
    activation and product), in bf16."""
    h, q, kv, i = a["hidden"], a["heads"] * HEAD_DIM, a["kv_heads"] * HEAD_DIM, a["intermediate"]
    checkpoints = h * a["layers"] * 2
    recompute = RECOMPUTE_FACTOR * (3 * h + 4 * q + 4 * kv + 4 * i) * 2
    return {"checkpoints": checkpoints, "recompute": recompute, "total": checkpoints + recompute}


def kv_bytes_per_token(a: dict) -> int:
    return 2 * a["layers"] * a["kv_heads"] * HEAD_DIM * 2  # K and V, every layer, bf16


def preset_memory(name: str) -> dict:
    c = yaml.safe_load((CONFIGS / name).read_text())
    a = ARCHITECTURES[c["model_name_or_path"]]
    p = parameters(a)
    n, server = p["total"], c.get("vllm_mode") == "server"
    processes = 7 if server else 8
    ga = c.get("gradient_accumulation_steps", 1)
    rollouts = c["per_device_train_batch_size"] * processes * ga
    prompts = rollouts // c["num_generations"]
    completion = c["max_completion_length"]
    analysis = c["analysis_max_prompt_length"] + c["analysis_max_new_tokens"]
    replay = c.get("replay_max_new_tokens") or completion
    meta = c.get("meta_experience", True)
    context = {"rollout": LONGEST_PROMPT + completion,
               "analysis": analysis if meta else 0,
               "replay": REPLAY_INSTRUCTION + c["analysis_max_new_tokens"] + LONGEST_PROMPT + replay if meta else 0}

    # ZeRO-3 over `processes`: bf16 weights and gradients, fp32 master weights and Adam's two moments, all sharded
    shard = {"weights": 2 * n / processes, "gradients": 2 * n / processes, "master": 4 * n / processes,
             "adam": 8 * n / processes}
    static = sum(shard.values())
    in_flight = 2 * p["embedding"] * 2 + p["layer"] * 2  # the LM head and its full gradient, a prefetched layer
    # The largest forward/backward of a micro-step: the policy's micro-batch, or the NLL rows that micro-step gets
    # (kept meta-experiences spread over processes x micro-steps); under ZeRO-3 the NLL takes its own backward first.
    policy_tokens = c["per_device_train_batch_size"] * (LONGEST_PROMPT + completion)
    # pairs of a prompt: every (correct, incorrect) pair (the paper's set), at most (G/2)^2, or the preset's cap
    all_pairs = c["num_generations"] ** 2 // 4
    cap = c.get("max_pairs_per_prompt")
    pairs_per_prompt = (all_pairs if cap is None else min(cap, all_pairs)) if meta else 0
    kept_max = prompts * pairs_per_prompt
    nll_tokens = math.ceil(kept_max / (processes * ga)) * analysis
    tokens = max(policy_tokens, nll_tokens)
    per_token = activation_bytes_per_token(a)
    activations = tokens * per_token["total"]
    step_transient = 4 * min(DEEPSPEED_SUB_GROUP, n / processes)
    train_peak = static + OVERHEAD_GIB * GIB + max(in_flight + activations, step_transient)

    utilization = SERVER_UTILIZATION if server else c.get("vllm_gpu_memory_utilization", 0.3)
    vllm = utilization * CARD_GIB * GIB
    kv = vllm - 2 * n - VLLM_OTHER_GIB * GIB
    sleep = bool(c.get("vllm_enable_sleep_mode", False))
    if server:  # training GPUs hold no vLLM; one more GPU holds the server
        peak, generation_peak = train_peak, vllm
    elif sleep:  # vLLM holds its share while generating, next to the sharded training state only
        generation_peak = static + OVERHEAD_GIB * GIB + vllm
        peak = max(generation_peak, train_peak + VLLM_ASLEEP_GIB * GIB)
    else:
        generation_peak = static + OVERHEAD_GIB * GIB + vllm
        peak = train_peak + vllm
    g = lambda x: round(x / GIB, 1)  # noqa: E731
    return {
        "preset": name, "model": c["model_name_or_path"], "parameters_billion": round(n / 1e9, 2),
        "processes": processes, "per_device_train_batch_size": c["per_device_train_batch_size"],
        "gradient_accumulation_steps": ga, "rollouts_per_step": rollouts, "prompts_per_step": prompts,
        "context_needed": max(context.values()), "context_parts": context,
        "vllm_max_model_length": c.get("vllm_max_model_length"),
        "weights_gib": g(shard["weights"]), "gradients_gib": g(shard["gradients"]),
        "optimizer_gib": g(shard["master"] + shard["adam"]), "static_gib": g(static), "in_flight_gib": g(in_flight),
        "policy_tokens": policy_tokens, "nll_tokens": nll_tokens, "activation_kib_per_token": round(
            per_token["total"] / 1024), "activations_gib": g(activations), "step_transient_gib": g(step_transient),
        "overhead_gib": OVERHEAD_GIB, "train_peak_gib": g(train_peak),
        "vllm_utilization": utilization, "vllm_gib": g(vllm), "vllm_weights_gib": g(2 * n), "kv_gib": g(kv),
        "kv_kib_per_token": kv_bytes_per_token(a) // 1024, "kv_tokens": int(kv // kv_bytes_per_token(a)),
        "sleep_mode": sleep, "server": server, "generation_peak_gib": g(generation_peak), "peak_gib": g(peak),
        "headroom_gib": round(CARD_GIB - peak / GIB, 1),
        # generated tokens per optimizer step, at most (every rollout, analysis and replay running to its budget)
        "pairs_cap": cap, "pairs_per_prompt": pairs_per_prompt, "pairs_per_step": kept_max,
        "paper_pairs_per_step": prompts * all_pairs if meta else 0, "rollout_tokens": rollouts * completion,
        "analysis_prompt_tokens": kept_max * c["analysis_max_prompt_length"],
        "analysis_tokens": kept_max * c["analysis_max_new_tokens"],
        "replay_tokens": kept_max * c.get("replay_samples", 1) * replay,
    }


def markdown(rows: list[dict]) -> str:
    """One row per preset, GiB per GPU."""
    lines = ["| preset | params | micro-batch × accumulation × processes = rollouts | weights | gradients | "
             "optimizer (fp32 master + Adam) | in flight | activations (tokens) | training peak | vLLM: share = weights + KV "
             "(KV tokens) | peak of 79.6 | headroom |", "|---" * 12 + "|"]
    for r in rows:
        where = " (own GPU)" if r["server"] else ", asleep in training" if r["sleep_mode"] else ""
        vllm = (f"{r['vllm_utilization']} × 79.6 = {r['vllm_gib']} = {r['vllm_weights_gib']} + {r['kv_gib']} "
                f"({r['kv_tokens']:,}){where}")
        lines.append(
            f"| `{r['preset']}` | {r['parameters_billion']} B | {r['per_device_train_batch_size']} × "
            f"{r['gradient_accumulation_steps']} × {r['processes']} = {r['rollouts_per_step']} | {r['weights_gib']} | "
            f"{r['gradients_gib']} | {r['optimizer_gib']} | {r['in_flight_gib']} | {r['activations_gib']} "
            f"({max(r['policy_tokens'], r['nll_tokens']):,}) | {r['train_peak_gib']} | {vllm} | {r['peak_gib']} | "
            f"{r['headroom_gib']} |")
    return "\n".join(lines)


def cost_markdown(rows: list[dict]) -> str:
    """One row per preset: the pairs per step and the tokens generated per step, each at most."""
    lines = ["| preset | pairs per mixed prompt | pairs per step (the paper's set) | rollout tokens | analysis prompt "
             "tokens | analysis tokens | replay tokens |", "|---" * 7 + "|"]
    for r in rows:
        choice = ("none (loop off)" if not r["pairs_per_prompt"] else
                  f"all: ≤ {r['pairs_per_prompt']} (the paper's)" if r["pairs_cap"] is None else
                  f"cap {r['pairs_cap']} (ours)")
        lines.append(
            f"| `{r['preset']}` | {choice} | {r['pairs_per_step']:,} ({r['paper_pairs_per_step']:,}) | "
            f"{r['rollout_tokens'] / 1e6:.1f} M | {r['analysis_prompt_tokens'] / 1e6:.1f} M | "
            f"{r['analysis_tokens'] / 1e6:.1f} M | {r['replay_tokens'] / 1e6:.1f} M |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [preset_memory(name) for name in PAPER_PRESETS]
    print(json.dumps(rows, indent=1) if args.json else markdown(rows) + "\n\n" + cost_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
