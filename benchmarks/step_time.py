"""MEL's cost over GRPO: step time per phase, tokens and peak memory, meta-experience off and on.

    .venv/bin/python benchmarks/step_time.py                      # tiny and embedded model, demo and paper settings
    .venv/bin/python benchmarks/step_time.py --models tiny --steps 2
    .venv/bin/python benchmarks/step_time.py --models embedded --settings wide \
        --output benchmarks/results/step_time_wide.json   # 16 prompts per step
    .venv/bin/python benchmarks/step_time.py --models embedded --settings demo --bf16 \
        --output benchmarks/results/step_time_bf16.json   # bf16 mixed precision

Each (model, setting, meta-experience) combination trains for `--steps` steps in its own process (so that peak
memory is its own) with the same seed and data; the first step is a warm-up and is left out. Results go to
`benchmarks/results/step_time.json` and a PNG chart beside it. Per setting:

- `mel_over_grpo`: MEL step time / GRPO step time;
- `extra_token_share`: tokens generated (analysis, replay) or trained (NLL) by MEL's extra phases / tokens
  generated and trained by the GRPO step (rollout tokens, counted twice: generated, then trained);
- `extra_time_share`: the time of those phases in the MEL run / the GRPO step time. Unlike `mel_over_grpo - 1`
  it does not subtract two runs' rollout and update times, which vary by up to 10 % between runs of the same work;
- tokens per second of each phase, and the NLL's cost per token against the policy update's.

`--accept-all` treats every analysis as well-formed and every replay as correct, so that replay and NLL are
measured too. By default it is on for the tiny model (whose analyses are random tokens); the embedded model runs
as it is, and at the demo setting a second time with it on.

Rates are given twice: per output token (generated or trained) and per processed token (adding what a phase
reads: the prompts of a generation, the prompt of the update, the analysis context of the NLL).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

SETTINGS = {
    # the CPU demo's settings (configs/demo.yaml)
    "demo": dict(num_generations=4, per_device_train_batch_size=2, gradient_accumulation_steps=8,
                 max_completion_length=48, analysis_max_new_tokens=192, analysis_max_prompt_length=1024,
                 max_pairs_per_prompt=1),
    # the paper's proportions: analysis budget equal to the rollout budget, one pair per prompt
    "paper": dict(num_generations=8, per_device_train_batch_size=2, gradient_accumulation_steps=8,
                  max_completion_length=96, analysis_max_new_tokens=96, analysis_max_prompt_length=1024,
                  max_pairs_per_prompt=1),
    # the paper's proportions with 16 prompts per step, for up to 16 analyses per step (not run by default)
    "wide": dict(num_generations=4, per_device_train_batch_size=2, gradient_accumulation_steps=32,
                 max_completion_length=48, analysis_max_new_tokens=48, analysis_max_prompt_length=1024,
                 max_pairs_per_prompt=1),
}
PHASES = ("rollout", "scoring", "analysis", "replay", "update")


def run_one(spec: dict) -> dict:
    """Train one combination in this process and summarise its steady-state steps."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    import melrl.training.trainer as trainer_module

    if spec["accept_all"]:
        def accept(job, *, leak_check):
            job.parsed, job.parts, job.parse_error = True, {}, None

        trainer_module.judge_analysis = accept
        trainer_module.verify_batch = lambda texts, golds, **kw: [True] * len(texts)

    with tempfile.TemporaryDirectory(prefix="melrl-bench-") as folder:
        return train_and_summarise(spec, Path(folder))


def train_and_summarise(spec: dict, work: Path) -> dict:
    import melrl.training.trainer as trainer_module
    from melrl.training.config import MELConfig
    from melrl.data import load_records
    from melrl.jsonl import read_jsonl
    from melrl.models import build_tiny_model, load_model_and_tokenizer
    from melrl.cli.train import build_train_dataset

    model_name = spec["model"]
    if model_name == "tiny":
        model_name = str(build_tiny_model(work / "tiny"))
    model, tokenizer = load_model_and_tokenizer(model_name)
    records = load_records("arith", n=256, level=1, seed=0)
    dataset = build_train_dataset(records, tokenizer, "short")
    reward_funcs = [parity_accuracy] if spec["model"] == "tiny" else None
    settings = dict(
        output_dir=str(work / "run"), max_steps=spec["steps"], meta_experience=spec["meta_experience"],
        prompt_template="short", temperature=0.7, learning_rate=1e-5, use_cpu=True, bf16=False,
        gradient_checkpointing=True, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=0, **SETTINGS[spec["setting"]],
    )
    config = MELConfig(**settings | spec.get("overrides", {}))
    trainer = trainer_module.MELTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                                        processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    lines = read_jsonl(work / "run" / "metrics.jsonl")[1:]  # the first step warms up
    summary = {key: sum(line[key] or 0 for line in lines) / len(lines) for key in lines[0]
               if isinstance(lines[0][key], (int, float)) and key != "step"}
    summary["step_time"] = sum(summary[f"time_{p}"] for p in PHASES)
    summary["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    summary["wall_seconds"] = wall
    return summary


def parity_accuracy(prompts, completions, **kwargs):
    """The tiny model's stand-in verdict: mixed groups without a model that can do arithmetic."""
    return [float(len(c) % 2) for c in completions]


parity_accuracy.__name__ = "accuracy"


def measure(model: str, setting: str, steps: int, accept_all: bool, overrides: dict | None = None) -> dict:
    results = {}
    for meta in (False, True):
        spec = dict(model=model, setting=setting, steps=steps, meta_experience=meta, accept_all=accept_all,
                    overrides=overrides or {})
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], cwd=ROOT, capture_output=True,
                             text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{spec} failed:\n{out.stderr[-3000:]}")
        results["mel" if meta else "grpo"] = json.loads(out.stdout.strip().splitlines()[-1])
    return compare(results["grpo"], results["mel"]) | {"grpo": results["grpo"], "mel": results["mel"]}


def rate(tokens: float, seconds: float) -> float | None:
    return tokens / seconds if seconds > 0 and tokens > 0 else None


def compare(grpo: dict, mel: dict) -> dict:
    """Ratios and rates of one setting. "Output" tokens are generated or trained; "processed" tokens add what a
    phase reads: the prompts of a generation, the prompt (update) or the analysis context (NLL) of a loss."""
    seconds = {phase: mel[f"time_{phase}"] for phase in ("rollout", "analysis", "replay", "nll")}
    seconds["update"] = grpo["time_update"]
    output = {"rollout": mel["rollout_tokens"], "analysis": mel["analysis_tokens"], "replay": mel["replay_tokens"],
              "update": grpo["rollout_tokens"], "nll": mel["nll_tokens"]}
    read = {"rollout": mel["rollout_prompt_tokens"], "analysis": mel["analysis_prompt_tokens"],
            "replay": mel["replay_prompt_tokens"], "update": grpo["rollout_prompt_tokens"],
            "nll": mel["nll_context_tokens"]}
    extra = ("analysis", "replay", "nll")
    grpo_processed = 2 * (grpo["rollout_prompt_tokens"] + grpo["rollout_tokens"])
    return {
        "mel_over_grpo": mel["step_time"] / grpo["step_time"],
        "extra_time_share": sum(seconds[p] for p in extra) / grpo["step_time"],
        "extra_token_share": sum(output[p] for p in extra) / (2 * grpo["rollout_tokens"]),
        "extra_processed_token_share": sum(output[p] + read[p] for p in extra) / grpo_processed,
        "tokens_per_second": {phase: rate(output[phase], seconds[phase]) for phase in output},
        "processed_tokens_per_second": {phase: rate(output[phase] + read[phase], seconds[phase]) for phase in output},
        "peak_rss_gib": {"grpo": grpo["peak_rss_gib"], "mel": mel["peak_rss_gib"]},
    }


def plot(all_results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(all_results)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        bottom = [0.0, 0.0]
        for phase in PHASES:
            values = [all_results[name][run][f"time_{phase}"] for run in ("grpo", "mel")]
            ax.bar(["GRPO", "MEL"], values, bottom=bottom, label=phase)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_title(f"{name}\nMEL/GRPO {all_results[name]['mel_over_grpo']:.2f}, "
                     f"extra tokens {all_results[name]['extra_token_share']:.2f}", fontsize=9)
        ax.set_ylabel("seconds per step")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def accept_modes(choice: str, model: str, setting: str) -> list[bool]:
    """auto: the tiny model always accepts (its analyses are random tokens); the embedded model runs as it is,
    and at the demo setting also with every analysis accepted, so that replay and NLL are measured on it."""
    if choice != "auto":
        return [choice == "yes"]
    if model == "tiny":
        return [True]
    return [False, True] if setting == "demo" else [False]


def rounded(values: dict) -> dict:
    return {key: (round(value, 2) if value else None) for key, value in values.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,embedded")
    parser.add_argument("--settings", default="demo,paper")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--accept-all", choices=("auto", "yes", "no"), default="auto",
                        help="accept every analysis and replay (auto: tiny model; embedded model at the demo setting too)")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 mixed precision (the update and NLL in autocast; generation in float32)")
    parser.add_argument("--output", default=str(RESULTS / "step_time.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0

    overrides = {"bf16": True} if args.bf16 else None
    all_results = {}
    for model in args.models.split(","):
        for setting in args.settings.split(","):
            for accept in accept_modes(args.accept_all, model, setting):
                name = f"{model}/{setting}" + ("/accept-all" if accept else "")
                model_name = "smollm2-135m-instruct" if model == "embedded" else model
                result = measure(model_name, setting, args.steps, accept, overrides)
                result["bf16"] = args.bf16
                all_results[name] = result
                print(f"{name}: MEL/GRPO step time {result['mel_over_grpo']:.2f}, extra token share "
                      f"{result['extra_token_share']:.2f} (processed {result['extra_processed_token_share']:.2f}), "
                      f"tokens/s {rounded(result['tokens_per_second'])}, processed tokens/s "
                      f"{rounded(result['processed_tokens_per_second'])}, peak RSS {rounded(result['peak_rss_gib'])} GiB",
                      flush=True)
    save_results(all_results, args.output, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
