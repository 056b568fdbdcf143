"""Does meta-experience help at small scale? GRPO against MEL on the embedded model and `arith`, several seeds.

    .venv/bin/python benchmarks/study.py                     # 3 seeds, about an hour on 2 cores
    .venv/bin/python benchmarks/study.py --seeds 0 --steps 2 --eval-limit 8   # a quick look

For every seed, GRPO and MEL train from the same model with the same data order and rollout settings
(`melrl/configs/study.yaml`; they differ only in `meta_experience`). Every final model, and the untrained one, is
then evaluated on held-out `arith` test problems: greedy Pass@1, Avg@k and Pass@k from k samples.

Runs and evaluations go under `--work` (default `runs/study/`); an interrupted study resumes where it stopped
(finished evaluations are kept, an unfinished training run starts again). Results go to `--output`
(default `benchmarks/results/study/`): `results.json`, `results.md` (mean ± std over seeds) and `report.html`
(`melrl report` of all runs, with the PNG figures beside it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"GRPO": False, "MEL": True}


def eval_settings(args) -> dict:
    return dict(template="short", k=args.k, temperature=args.temperature, greedy=True,
                max_new_tokens=args.max_new_tokens, limit=args.eval_limit, seed=0, progress=True)


def train_and_evaluate(args, method: str, seed: int, run_dir: Path) -> dict:
    """Metrics of one trained run on the held-out set; a finished evaluation is read back, not redone."""
    from melrl.cli import parse_train_args, preset_path
    from melrl.evaluation import evaluate
    from melrl.training.train import run_training

    eval_dir = run_dir / "eval"
    results_file = eval_dir / "results.json"
    if results_file.exists():
        print(f"{method} seed {seed}: evaluation found in {eval_dir}", flush=True)
        return json.loads(results_file.read_text())["metrics"]["arith"]
    if (run_dir / "model.safetensors").exists() and (run_dir / "metrics.jsonl").exists():
        model = str(run_dir)  # trained before an interruption: evaluate the saved weights
    else:
        argv = ["--config", str(preset_path("study.yaml")), "--seed", str(seed), "--output_dir", str(run_dir),
                "--meta_experience", str(METHODS[method]), "--max_steps", str(args.steps),
                "--model_name_or_path", args.model]
        run, config = parse_train_args(argv)
        start = time.perf_counter()
        print(f"{method} seed {seed}: training {args.steps} steps into {run_dir}", flush=True)
        trainer = run_training(run, config)
        print(f"{method} seed {seed}: trained in {time.perf_counter() - start:.0f} s", flush=True)
        model = (trainer.model, trainer.processing_class)
    results = evaluate(model, "arith", output_dir=str(eval_dir), label=f"{method} seed {seed}",
                       **eval_settings(args))
    return results["metrics"]["arith"]


def run_summary(run_dir: Path) -> dict:
    """Training-side numbers of one run: mean reward and the meta-experience counters summed over steps."""
    from melrl.jsonl import read_jsonl

    lines = [line for line in read_jsonl(run_dir / "metrics.jsonl") if "reward_mean" in line]
    totals = {key: sum(line.get(key) or 0 for line in lines) for key in ("pairs", "parsed", "kept")}
    rewards = [line["reward_mean"] for line in lines]
    return {"steps": len(lines), "reward_first_half": statistics.fmean(rewards[: len(rewards) // 2] or rewards),
            "reward_second_half": statistics.fmean(rewards[len(rewards) // 2:]), **totals}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def markdown(results: dict) -> str:
    from melrl.evaluation.report import metric_label

    metrics = list(results["untrained"])
    header = "| Model | " + " | ".join(map(metric_label, metrics)) + " |"
    lines = [header, "|---|" + "---:|" * len(metrics)]
    lines.append("| untrained | " + " | ".join(f"{100 * results['untrained'][m]:.1f}" for m in metrics) + " |")
    for method, summary in results["methods"].items():
        cells = [f"{100 * summary[m]['mean']:.1f} ± {100 * summary[m]['std']:.1f}" for m in metrics]
        lines.append(f"| {method} ({len(results['seeds'])} seeds) | " + " | ".join(cells) + " |")
    settings = results["settings"]
    lines.append("")
    lines.append(f"Percent on {settings['eval_limit']} held-out `arith` problems, mean ± sample std over seeds "
                 f"{', '.join(map(str, results['seeds']))}; {settings['steps']} training steps of 16 rollouts; "
                 f"Avg@{settings['k']}/Pass@{settings['k']} from {settings['k']} samples at temperature "
                 f"{settings['temperature']}, {settings['max_new_tokens']} new tokens.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model to train (name, folder or hub id)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eval-limit", type=int, default=64, help="held-out arith problems")
    parser.add_argument("--k", type=int, default=4, help="samples per problem for Avg@k and Pass@k")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--work", default="runs/study")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "study"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from melrl.evaluation import evaluate
    from melrl.report import build_report

    seeds = [int(s) for s in args.seeds.split(",")]
    work, output = Path(args.work), Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    untrained = evaluate(args.model, "arith", output_dir=str(work / "untrained-eval"),
                         label="untrained", **eval_settings(args))["metrics"]["arith"]
    per_run, run_dirs = {}, []
    for seed in seeds:
        for method in METHODS:
            run_dir = work / f"{method.lower()}-seed{seed}"
            metrics = train_and_evaluate(args, method, seed, run_dir)
            gc.collect()  # the finished run's trainer and weights, before the next run loads its own
            per_run[run_dir.name] = {"method": method, "seed": seed, "eval": metrics, "train": run_summary(run_dir)}
            run_dirs.append(run_dir)
    methods = {method: {metric: mean_std([r["eval"][metric] for r in per_run.values() if r["method"] == method])
                        for metric in untrained} for method in METHODS}
    results = {
        "seeds": seeds,
        "settings": {k: v for k, v in vars(args).items() if k not in ("work", "output", "seeds")} | {
            "train_config": "melrl/configs/study.yaml"},
        "untrained": untrained,
        "methods": methods,
        "runs": per_run,
        "wall_seconds": time.perf_counter() - start,
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (output / "results.md").write_text(table)
    report = build_report(run_dirs, output / "report.html", title=f"GRPO vs MEL on arith, {args.model}")
    print(table)
    print(f"saved {output / 'results.json'}, {output / 'results.md'} and {report.html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
