"""Does meta-experience help at small scale? GRPO against MEL on the embedded model and `arith`, several seeds,
and the MEL runs' experience banks used in context at test time.

    .venv/bin/python benchmarks/study.py                     # 5 seeds; see benchmarks/STUDY.md for its wall time
    .venv/bin/python benchmarks/study.py --seeds 0 --steps 2 --eval-limit 8   # a quick look

For every seed, GRPO and MEL train from the same model with the same data order and rollout settings
(`melrl/configs/study.yaml`; they differ only in `meta_experience`). Every final model, and the untrained one, is
then evaluated on held-out `arith` test problems: greedy Pass@1, Avg@k and Pass@k from k samples. Each MEL run's
kept meta-experiences (its `experiences.jsonl`) are then used as an experience bank in context (`melrl eval
--experiences`, `--bank-k` retrieved per problem) by the untrained model and by that MEL run's own final model
(`--no-bank` skips these arms; a run that kept nothing has no bank, which its record says).

With `--teacher-url URL --teacher-model ID`, a third method trains beside them, `mel-teacher` (beyond the paper):
MEL whose meta-experiences are written by the model served at URL (`analyst: endpoint`, an OpenAI-compatible
chat-completions server such as `vllm serve`), with replay and the NLL on the trained model as in MEL:

    vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000 &
    .venv/bin/python benchmarks/study.py --teacher-url http://127.0.0.1:8000/v1 --teacher-model Qwen/Qwen2.5-7B-Instruct

Runs and evaluations go under `--work` (default `runs/study/`); an interrupted study resumes where it stopped
(finished evaluations are kept, an unfinished training run starts again). Results go to `--output`
(default `benchmarks/results/study/`): `results.json` (one record per trained run and per evaluated arm, and the
paired differences with their 95 % confidence intervals), `results.md` and `report.html` (`melrl report` of all
runs, with the PNG figures beside it).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
METHODS = {"GRPO": False, "MEL": True}
TEACHER = "mel-teacher"  # MEL with an external analyst (`--teacher-url`, `--teacher-model`)
# Two-sided 95 % quantiles of Student's t by degrees of freedom (the paired differences have n_seeds - 1).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def eval_settings(args) -> dict:
    return dict(template="short", k=args.k, temperature=args.temperature, greedy=True,
                max_new_tokens=args.max_new_tokens, limit=args.eval_limit, seed=0, progress=True)


def evaluate_once(args, model, eval_dir: Path, label: str, **extra) -> dict:
    """Metrics of `model` on the held-out set; a finished evaluation is read back, not redone."""
    from melrl.evaluation import evaluate

    results_file = eval_dir / "results.json"
    if results_file.exists():
        print(f"{label}: evaluation found in {eval_dir}", flush=True)
        return json.loads(results_file.read_text())["metrics"]["arith"]
    return evaluate(model, "arith", output_dir=str(eval_dir), label=label, **eval_settings(args),
                    **extra)["metrics"]["arith"]


def train(args, method: str, seed: int, run_dir: Path):
    """The trained model of one run: trained now, or the saved weights of a run trained before an interruption."""
    if (run_dir / "model.safetensors").exists() and (run_dir / "metrics.jsonl").exists():
        return str(run_dir)
    from melrl.cli import parse_train_args, preset_path
    from melrl.cli.train import run_training

    argv = ["--config", str(preset_path("study.yaml")), "--seed", str(seed), "--output_dir", str(run_dir),
            "--max_steps", str(args.steps), "--model_name_or_path", args.model, *method_args(args, method)]
    run, config = parse_train_args(argv)
    if method == TEACHER:
        from melrl.cli.main import check_analyst_endpoint

        check_analyst_endpoint(config)
    start = time.perf_counter()
    print(f"{method} seed {seed}: training {args.steps} steps into {run_dir}", flush=True)
    trainer = run_training(run, config)
    print(f"{method} seed {seed}: trained in {time.perf_counter() - start:.0f} s", flush=True)
    return trainer.model, trainer.processing_class


def method_args(args, method: str) -> list[str]:
    if method == TEACHER:
        return ["--meta_experience", "True", "--analyst", "endpoint", "--analyst_base_url", args.teacher_url,
                "--analyst_model", args.teacher_model]
    return ["--meta_experience", str(METHODS[method])]


def run_summary(run_dir: Path) -> dict:
    """Training-side numbers of one run: mean reward and the meta-experience counters summed over steps."""
    from melrl.jsonl import read_jsonl

    lines = [line for line in read_jsonl(run_dir / "metrics.jsonl") if "reward_mean" in line]
    totals = {key: sum(line.get(key) or 0 for line in lines)
              for key in ("pairs", "constructed", "truncated", "parsed", "replayed", "kept", "analyst_failed")}
    rewards = [line["reward_mean"] for line in lines]
    nll = [line["nll"] for line in lines if line.get("nll") is not None]
    return {"steps": len(lines), "reward_first_half": statistics.fmean(rewards[: len(rewards) // 2] or rewards),
            "reward_second_half": statistics.fmean(rewards[len(rewards) // 2:]), "nll_steps": len(nll), **totals}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def t_quantile(df: int) -> float:
    """The tabulated 95 % quantile for `df`, or the next smaller tabulated df's (a slightly wider interval)."""
    return T_975[max(d for d in T_975 if d <= df)]


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Mean of a - b over the seeds both have, with a 95 % t confidence interval; None without two pairs."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = t_quantile(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": len(diffs), "seeds": seeds}


ARMS = ("untrained", "GRPO", "MEL", TEACHER, "untrained + MEL bank", "MEL + own bank")
COMPARISONS = (("MEL", "GRPO"), ("MEL + own bank", "MEL"), ("untrained + MEL bank", "untrained"),
               ("MEL + own bank", "GRPO"), (TEACHER, "MEL"))


def by_seed(records: list[dict], arm: str, metric: str, seeds: list[int]) -> dict[int, float]:
    found = [r for r in records if r["arm"] == arm and r.get("metrics")]
    if arm == "untrained" and found:  # one evaluation, the same for every seed
        return {seed: found[0]["metrics"][metric] for seed in seeds}
    return {r["seed"]: r["metrics"][metric] for r in found}


def summarise(records: list[dict], seeds: list[int], metrics: list[str]) -> tuple[dict, dict]:
    arms = {arm: {m: mean_std(list(by_seed(records, arm, m, seeds).values())) for m in metrics}
            for arm in ARMS if by_seed(records, arm, metrics[0], seeds)}
    differences = {f"{a} - {b}": {m: paired_difference(by_seed(records, a, m, seeds), by_seed(records, b, m, seeds))
                                  for m in metrics}
                   for a, b in COMPARISONS if a in arms and b in arms}
    return arms, differences


def markdown(results: dict) -> str:
    from melrl.evaluation.tables import metric_label

    metrics = results["metrics"]
    lines = ["| Model | n | " + " | ".join(map(metric_label, metrics)) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for arm, summary in results["arms"].items():
        n = len(summary[metrics[0]]["values"])
        cells = [f"{100 * summary[m]['mean']:.1f}" + (f" ± {100 * summary[m]['std']:.1f}" if arm != "untrained" else "")
                 for m in metrics]
        lines.append(f"| {arm} | {1 if arm == 'untrained' else n} | " + " | ".join(cells) + " |")
    if results["differences"]:
        lines += ["", "| Difference (paired by seed) | n | " + " | ".join(map(metric_label, metrics)) + " |",
                  "|---|---:|" + "---:|" * len(metrics)]
        for name, per_metric in results["differences"].items():
            cells = [("n/a" if d is None else
                      f"{100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]")
                     for d in per_metric.values()]
            n = next((d["n"] for d in per_metric.values() if d), 0)
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    settings = results["settings"]
    lines.append("")
    lines.append(f"Percent on {settings['eval_limit']} held-out `arith` problems; arms: mean ± sample std over seeds "
                 f"{', '.join(map(str, results['seeds']))}; differences: mean [95 % t interval]. "
                 f"{settings['steps']} training steps of 16 rollouts; Avg@{settings['k']}/Pass@{settings['k']} from "
                 f"{settings['k']} samples at temperature {settings['temperature']}, {settings['max_new_tokens']} new "
                 f"tokens; banks: {settings['bank_k']} retrieved meta-experiences per problem.")
    seed_rows = per_seed_table(results)
    if seed_rows:
        lines += seed_rows + ["", f"Per seed: {metric_label(metrics[0])} / {metric_label(metrics[1])}; "
                              "— where the run kept nothing, so it has no bank."]
    return "\n".join(lines) + "\n"


def per_seed_table(results: dict) -> list[str]:
    """One row per seed: greedy Pass@1 / Avg@k of every arm, and what the MEL run kept."""
    records, seeds = results.get("records") or [], results["seeds"]
    if not records:
        return []
    first, second = results["metrics"][:2]

    def cell(arm: str, seed: int) -> str:
        found = [r for r in records if r["arm"] == arm and r.get("seed") == seed and r.get("metrics")]
        return (f"{100 * found[0]['metrics'][first]:.1f} / {100 * found[0]['metrics'][second]:.1f}"
                if found else "—")

    arms = ("GRPO", "MEL", "untrained + MEL bank", "MEL + own bank")
    lines = ["", "| seed | " + " | ".join(arms) + " | MEL analyses: constructed / truncated / kept |",
             "|---:|" + "---|" * (len(arms) + 1)]
    for seed in seeds:
        mel = next((r for r in records if r["arm"] == "MEL" and r.get("seed") == seed), {})
        train = mel.get("train") or {}
        lines.append(f"| {seed} | " + " | ".join(cell(arm, seed) for arm in arms)
                     + f" | {train.get('constructed', 0)} / {train.get('truncated', 0)} / {mel.get('kept', 0)} |")
    return lines


def bank_arms(args, seed: int, run_dir: Path, trained, untrained_model) -> list[dict]:
    """The MEL run's bank in context: for the untrained model and for the run's own final model."""
    summary = run_summary(run_dir)
    base = {"method": "MEL", "seed": seed, "bank": str(run_dir / "experiences.jsonl"), "bank_size": summary["kept"]}
    if not summary["kept"]:
        print(f"MEL seed {seed}: no kept meta-experience, so no bank arms", flush=True)
        return [{**base, "arm": arm, "metrics": None} for arm in ("untrained + MEL bank", "MEL + own bank")]
    extra = {"experiences": str(run_dir), "retrieve": args.bank_k}
    return [
        {**base, "arm": "untrained + MEL bank", "metrics": evaluate_once(
            args, untrained_model, run_dir / "eval-untrained-bank", f"untrained + MEL seed {seed} bank", **extra)},
        {**base, "arm": "MEL + own bank", "metrics": evaluate_once(
            args, trained, run_dir / "eval-bank", f"MEL seed {seed} + own bank", **extra)},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model to train (name, folder or hub id)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--eval-limit", type=int, default=48, help="held-out arith problems")
    parser.add_argument("--k", type=int, default=4, help="samples per problem for Avg@k and Pass@k")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--bank-k", type=int, default=3, help="meta-experiences retrieved per problem from a bank")
    parser.add_argument("--no-bank", dest="bank", action="store_false", help="skip the experience-bank arms")
    parser.add_argument("--teacher-url", default=None,
                        help="OpenAI-compatible server whose model writes the mel-teacher arm's meta-experiences")
    parser.add_argument("--teacher-model", default=None, help="the model id served at --teacher-url")
    parser.add_argument("--work", default="runs/study")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "study"))
    args = parser.parse_args(argv)
    if bool(args.teacher_url) != bool(args.teacher_model):
        parser.error("--teacher-url and --teacher-model go together")

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from melrl.report import build_report
    from results_file import provenance

    seeds = [int(s) for s in args.seeds.split(",")]
    work, output = Path(args.work), Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    records = [{"arm": "untrained", "method": None, "seed": None,
                "metrics": evaluate_once(args, args.model, work / "untrained-eval", "untrained")}]
    run_dirs = []
    for seed in seeds:
        for method in [*METHODS, *([TEACHER] if args.teacher_url else [])]:
            run_dir = work / f"{method.lower()}-seed{seed}"
            trained = train(args, method, seed, run_dir)
            metrics = evaluate_once(args, trained, run_dir / "eval", f"{method} seed {seed}")
            summary = run_summary(run_dir)
            records.append({"arm": method, "method": method, "seed": seed, "run": str(run_dir),
                            "kept": summary["kept"], "train": summary, "metrics": metrics})
            if method == "MEL" and args.bank:
                records += bank_arms(args, seed, run_dir, trained, args.model)
            del trained
            gc.collect()  # the finished run's trainer and weights, before the next run loads its own
            run_dirs.append(run_dir)
    metric_names = list(records[0]["metrics"])
    arms, differences = summarise(records, seeds, metric_names)
    results = {
        "seeds": seeds,
        "settings": {k: v for k, v in vars(args).items() if k not in ("work", "output", "seeds")} | {
            "train_config": "melrl/configs/study.yaml"},
        "metrics": metric_names,
        "records": records,
        "arms": arms,
        "differences": differences,
        "wall_seconds": time.perf_counter() - start,
        "provenance": provenance(),
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
