"""The GPU paths in one call: each runs on a tiny model built on the spot and prints one line; then a summary of
the paths that ran, were skipped by request, could not run, or failed. The exit status is 0 only when every path
ran or was skipped by request (`--skip`): a path that could not run (vLLM not installed, say) fails the check.

    make gpu-check                                        # on a machine with one GPU
    make gpu-check GPU_CHECK_ARGS='--skip vllm_colocate vllm_colocate_sleep'   # without vLLM, said so
    .venv/bin/python tools/gpu_check.py --tokenizer DIR --output benchmarks/results/gpu_check.json

Paths (each in its own process, so that one failure does not stop the others):
- `mel_bf16`: 2 MEL steps, transformers generation, bf16, every analysis accepted and every replay verified (so
  that replay and the NLL run); the per-phase step times are printed;
- `zero3`: the same under DeepSpeed ZeRO-3 on 1 process (`accelerate launch`);
- `fsdp`: the same under FSDP2 on 1 process;
- `eval`: `melrl eval` on the GPU (transformers back end);
- `vllm_colocate`: the 2 MEL steps with vLLM colocated, as the 4B and 8B presets run it (rollouts, analyses and
  replays on vLLM, the NLL on the kept meta-experiences);
- `vllm_colocate_sleep`: the same with vLLM's sleep mode (as the 14B presets) and grammar-guided analyses (vLLM's
  structured outputs).
A MEL path in which no meta-experience was kept (so the NLL never ran) fails.

No network is needed: the tokenizer comes from `--tokenizer` (a folder with `tokenizer.json`, e.g. the embedded
model's converted folder; `make gpu-check` copies it) or from the embedded model. `--device cpu` runs the same
paths on the CPU in float32, to check the script itself (the vLLM paths only where vLLM is importable).
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
ENGINES = {  # the shipped kits on 1 process, as shipped (ZeRO-3's init partitions the model as it loads)
    "zero3": ("deepspeed_zero3", {}),
    "fsdp": ("fsdp", {}),
}
VLLM_PATHS = {"vllm_colocate": [], "vllm_colocate_sleep": ["--sleep-mode", "--guided"]}
PATHS = ("mel_bf16", *ENGINES, "eval", *VLLM_PATHS)
SUMMARY = {"ran": "ran", "skipped": "skipped by request", "could not run": "could not run", "failed": "failed"}


def train(model_dir: str, output_dir: str, device: str, vllm: bool, sleep_mode: bool = False,
          guided: bool = False) -> dict:
    """2 MEL steps on the tiny model with every analysis accepted; the mean seconds per phase. Fails when no
    meta-experience was kept (the NLL never ran)."""
    import melrl.training.trainer as trainer_module
    from melrl.data import load_records
    from melrl.models import load_model_and_tokenizer
    from melrl.training.config import MELConfig
    from melrl.cli.train import build_train_dataset, end_processes, name_vllm_stop_tokens

    def accept(job, *, leak_check):
        job.parsed, job.parts, job.parse_error = True, {}, None

    trainer_module.judge_analysis = accept
    trainer_module.verify_batch = lambda texts, golds, **kw: [True] * len(texts)
    cpu = device == "cpu"
    config = MELConfig(
        output_dir=output_dir, max_steps=2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=32, analysis_max_new_tokens=32, analysis_max_prompt_length=2048,
        prompt_template="short", use_cpu=cpu, bf16=not cpu, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1, use_vllm=vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
        vllm_max_model_length=2048 + 32 if vllm else None, vllm_enable_sleep_mode=sleep_mode,
        analysis_guidance="sections" if guided else "none", seed=0,
    )
    # after the config, as in `melrl train`: under a kit the engine's loading settings apply
    model, tokenizer = load_model_and_tokenizer(model_dir, dtype="float32" if cpu else "bfloat16")
    name_vllm_stop_tokens(config, model, tokenizer)  # as `melrl train`
    dataset = build_train_dataset(load_records("arith", n=32, level=1, seed=0), tokenizer, "short")
    trainer = trainer_module.MELTrainer(model=model, reward_funcs=[parity], args=config, train_dataset=dataset,
                                        processing_class=tokenizer)
    trainer.train()
    end_processes(trainer)
    lines = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    kept = sum(line["kept"] for line in lines)
    if not kept or all(line["nll"] is None for line in lines):
        raise RuntimeError(f"no meta-experience was kept in {len(lines)} steps ({sum(line['pairs'] for line in lines)} "
                           "pairs): the NLL never ran")
    times = {key: round(sum(line[key] for line in lines) / len(lines), 3) for key in lines[0] if key.startswith("time_")}
    return {"kept": kept, "nll": lines[-1]["nll"], **times}


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


def summarize(results: list[dict]) -> dict[str, list[str]]:
    """The paths by outcome: ran, skipped by request, could not run, failed."""
    summary = {label: [] for label in SUMMARY.values()}
    for result in results:
        summary[SUMMARY[result["status"]]].append(result["path"])
    return summary


def exit_status(summary: dict[str, list[str]]) -> int:
    """0 when every path ran or was skipped by request; a path that failed or could not run fails the check."""
    return 1 if summary["failed"] or summary["could not run"] else 0


def summary_line(summary: dict[str, list[str]]) -> str:
    return "summary: " + "; ".join(f"{label}: {', '.join(paths) or '-'}" for label, paths in summary.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="smollm2-135m-instruct", help="a tokenizer folder or model name")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--timeout", type=int, default=150, help="seconds per path")
    parser.add_argument("--skip", nargs="+", default=[], choices=PATHS, metavar="PATH",
                        help=f"paths not to run, reported as skipped by request: {', '.join(PATHS)}")
    parser.add_argument("--output", default=None, help="also save the lines as JSON (benchmarks/results_file.py)")
    parser.add_argument("--train", nargs=2, metavar=("MODEL_DIR", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--vllm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sleep-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--guided", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train:  # a worker: one training path
        print(json.dumps(train(*args.train, args.device, args.vllm, args.sleep_mode, args.guided)))
        return 0

    vllm_missing = importlib.util.find_spec("vllm") is None
    results = {name: {"path": name, "status": "skipped"} for name in args.skip}
    if vllm_missing:
        for name in set(VLLM_PATHS) - set(args.skip):
            results[name] = {"path": name, "status": "could not run", "error": "vllm is not importable here"}
    for result in results.values():
        print(json.dumps(result), flush=True)
    to_run = [name for name in PATHS if name not in results]
    if to_run:
        results |= run_paths(to_run, args)
    ordered = [results[name] for name in PATHS]
    summary = summarize(ordered)
    print(summary_line(summary), flush=True)
    if args.output:
        sys.path.insert(0, str(ROOT / "benchmarks"))  # results files share the benchmarks' provenance record
        from results_file import save_results

        save_results({"device": args.device, "paths": ordered, "summary": summary}, args.output)
    return exit_status(summary)


def run_paths(names: list[str], args) -> dict[str, dict]:
    """Run the named paths, each in its own process, on a tiny model built for them in a temporary folder (removed
    afterwards); print each result."""
    from melrl.cli import accelerate_kit
    from melrl.models import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="melrl-gpu-check-") as folder:  # the tiny model and the paths' runs
        work = Path(folder)
        model_dir = str(build_tiny_model(work / "tiny", tokenizer_source=args.tokenizer))
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "HF_HUB_OFFLINE": "1"}
        if args.device == "cpu":
            env["DS_ACCELERATOR"] = "cpu"
        worker = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--train", model_dir]
        commands = {"mel_bf16": worker + [str(work / "mel_bf16")]}
        for engine, (kit, settings) in ENGINES.items():
            config = work / f"{engine}.yaml"
            kit_config = accelerate_kit(kit, num_processes=1, use_cpu=args.device == "cpu", **settings)
            config.write_text(yaml.safe_dump(kit_config))
            commands[engine] = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                                *worker[1:-1], model_dir, str(work / engine)]
        commands["eval"] = [sys.executable, "-m", "melrl", "eval", "--model", model_dir, "--benchmarks", "arith",
                            "--limit", "4", "--k", "2", "--max-new-tokens", "16", "--template", "short",
                            "--backend", "transformers", "--output-dir", str(work / "eval")]
        for name, flags in VLLM_PATHS.items():
            commands[name] = worker + [str(work / name), "--vllm", *flags]
        results = {}
        for name in names:
            results[name] = run_path(name, commands[name], args.timeout, env)
            print(json.dumps(results[name]), flush=True)
        return results


if __name__ == "__main__":
    sys.exit(main())
