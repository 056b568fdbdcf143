"""The GPU paths in one call: each runs on a tiny model built on the spot and prints one line, ran or failed.

    make gpu-check                                        # on a machine with one GPU
    .venv/bin/python benchmarks/gpu_check.py --tokenizer DIR --output benchmarks/results/gpu_check.json

Paths (each in its own process, so that one failure does not stop the others):
- `mel_bf16`: 2 MEL steps, transformers generation, bf16, every analysis accepted and every replay verified (so
  that replay and the NLL run); the per-phase step times are printed;
- `zero3`: the same under DeepSpeed ZeRO-3 on 1 process (`accelerate launch`);
- `fsdp`: the same under FSDP2 on 1 process;
- `eval`: `melrl eval` on the GPU (transformers back end);
- `vllm_colocate`: 2 MEL steps with vLLM colocated, where vLLM is importable (else "skipped").

No network is needed: the tokenizer comes from `--tokenizer` (a folder with `tokenizer.json`, e.g. the embedded
model's converted folder; `make gpu-check` copies it) or from the embedded model. `--device cpu` runs the same
paths on the CPU in float32 (no vLLM), to check the script itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {  # the shipped kits on 1 process; the tiny model is loaded whole before the engine shards it
    "zero3": ("deepspeed_zero3", {"zero3_init_flag": False}),
    "fsdp": ("fsdp", {"fsdp_cpu_ram_efficient_loading": False}),
}


def train(model_dir: str, output_dir: str, device: str, vllm: bool) -> dict:
    """2 MEL steps on the tiny model with every analysis accepted; the mean seconds per phase."""
    import melrl.training.trainer as trainer_module
    from melrl.data import load_records
    from melrl.models import load_model_and_tokenizer
    from melrl.training.config import MELConfig
    from melrl.cli.train import build_train_dataset

    def accept(job, *, leak_check):
        job.parsed, job.parts, job.parse_error = True, {}, None

    trainer_module.judge_analysis = accept
    trainer_module.verify_batch = lambda texts, golds, **kw: [True] * len(texts)
    cpu = device == "cpu"
    model, tokenizer = load_model_and_tokenizer(model_dir, dtype="float32" if cpu else "bfloat16")
    config = MELConfig(
        output_dir=output_dir, max_steps=2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=32, analysis_max_new_tokens=32, analysis_max_prompt_length=2048,
        prompt_template="short", use_cpu=cpu, bf16=not cpu, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1, use_vllm=vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
        vllm_max_model_length=2048 + 32 if vllm else None, seed=0,
    )
    dataset = build_train_dataset(load_records("arith", n=32, level=1, seed=0), tokenizer, "short")
    trainer = trainer_module.MELTrainer(model=model, reward_funcs=[parity], args=config, train_dataset=dataset,
                                        processing_class=tokenizer)
    trainer.train()
    lines = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    times = {key: round(sum(line[key] for line in lines) / len(lines), 3) for key in lines[0] if key.startswith("time_")}
    return {"kept": sum(line["kept"] for line in lines), "nll": lines[-1]["nll"], **times}


def parity(prompts, completions, **kwargs):
    """Mixed groups from a random model: odd-length completions count as correct."""
    return [float(len(c) % 2) for c in completions]


parity.__name__ = "accuracy"


def run_path(name: str, command: list[str], timeout: int, env: dict) -> dict:
    start = time.perf_counter()
    try:
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"path": name, "status": "failed", "error": f"timed out after {timeout} s"}
    seconds = round(time.perf_counter() - start, 1)
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if "Error" in line or "error" in line] or \
            out.stderr.splitlines()[-1:]
        return {"path": name, "status": "failed", "seconds": seconds, "error": (lines or ["?"])[-1].strip()[:300]}
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
    result = json.loads(last) if last.startswith("{") else {}
    return {"path": name, "status": "ran", "seconds": seconds, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="smollm2-135m-instruct", help="a tokenizer folder or model name")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--timeout", type=int, default=150, help="seconds per path")
    parser.add_argument("--output", default=None, help="also save the lines as JSON (benchmarks/results_file.py)")
    parser.add_argument("--train", nargs=2, metavar=("MODEL_DIR", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--vllm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train:  # a worker: one training path
        print(json.dumps(train(*args.train, args.device, args.vllm)))
        return 0

    from melrl.cli import accelerate_kit
    from melrl.models import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="melrl-gpu-check-"))
    model_dir = str(build_tiny_model(work / "tiny", tokenizer_source=args.tokenizer))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "HF_HUB_OFFLINE": "1"}
    if args.device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
    worker = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--train", model_dir]
    paths = [("mel_bf16", worker + [str(work / "mel_bf16")])]
    for engine, (kit, settings) in ENGINES.items():
        config = work / f"{engine}.yaml"
        config.write_text(yaml.safe_dump(accelerate_kit(kit, num_processes=1, use_cpu=args.device == "cpu", **settings)))
        paths.append((engine, [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                               *worker[1:-1], model_dir, str(work / engine)]))
    paths.append(("eval", [sys.executable, "-m", "melrl", "eval", "--model", model_dir, "--benchmarks", "arith",
                           "--limit", "4", "--k", "2", "--max-new-tokens", "16", "--template", "short",
                           "--backend", "transformers", "--output-dir", str(work / "eval")]))
    results = []
    for name, command in paths:
        results.append(run_path(name, command, args.timeout, env))
        print(json.dumps(results[-1]), flush=True)
    if args.device == "cuda" and importlib.util.find_spec("vllm") is not None:
        results.append(run_path("vllm_colocate", worker + [str(work / "vllm"), "--vllm"], args.timeout, env))
    else:
        results.append({"path": "vllm_colocate", "status": "skipped", "error": "vllm is not importable here"})
    print(json.dumps(results[-1]), flush=True)
    if args.output:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_file import save_results

        save_results({"device": args.device, "paths": results}, args.output)
    return 0 if all(r["status"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
