"""Generation with what its prompts share prefilled once against plain batched `generate`, on CPU.

    .venv/bin/python benchmarks/shared_prefix.py                  # embedded SmolLM2-135M, 1 to 16 analyses
    .venv/bin/python benchmarks/shared_prefix.py --phase rollout  # 4 x 4, 2 x 8 and 16 x 4 rollouts
    .venv/bin/python benchmarks/shared_prefix.py --model PATH --counts 2,4 --repeats 1

Every analysis prompt begins with the same instruction of about 480 tokens, and every rollout prompt appears once
per sample of its group (`melrl/shared_prefix.py`). For `--phase analysis` the script lets the model solve 16
`arith` problems twice (the `short` template, 48 new tokens), builds one analysis prompt per problem from its two
solutions, and times one analysis call of 1, 2, 4, 10 and 16 prompts. For `--phase rollout` it times one rollout
call of P problems x G samples for each `--groups` entry PxG, the demo's template and prompts. Both ways run with
the trainer's CPU decoding on. Every row decodes exactly `--new-tokens` tokens, so both ways do the same work
and, with the same seed, sample the same tokens. Each call runs `--repeats` times, alternating the two ways; the
median counts. Saves `benchmarks/results/shared_prefix.{json,png}` (analysis) or
`benchmarks/results/shared_prefix_rollouts.{json,png}`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from results_file import plot_two_ways, save_results
from timed_model import load_timed_model, prompt_ids

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS, SOLUTION_TOKENS = 16, 48
PLAIN, SHARED = "plain", "shared"


def generate(model, tokenizer, prompts: list[list[int]], new_tokens: int, shared: bool) -> tuple[float, list]:
    """Seconds for one left-padded `generate` call, and the tokens it generated per row."""
    import torch

    from melrl.cpu_decoding import fast_cpu_decoding
    from melrl.shared_prefix import shared_prefix_generation

    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
    torch.manual_seed(0)
    start = time.perf_counter()
    with (torch.no_grad(), fast_cpu_decoding(model, sequences=len(prompts)),
          shared_prefix_generation(model, enabled=shared)):
        rows = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                              temperature=0.7, top_k=0, pad_token_id=tokenizer.pad_token_id)
    return time.perf_counter() - start, rows[:, batch["input_ids"].size(1):].tolist()


def analysis_prompts(model, tokenizer) -> list[list[int]]:
    """One analysis prompt per problem, from two of the model's own solutions to it."""
    from melrl.data import load_records
    from melrl.prompts import analysis_text, solve_text

    problems = [r.problem for r in load_records("arith", n=PROBLEMS, seed=0)]
    solve = [prompt_ids(tokenizer, solve_text(p, "short")) for p in problems for _ in range(2)]
    _, solutions = generate(model, tokenizer, solve, SOLUTION_TOKENS, shared=False)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in solutions]
    return [prompt_ids(tokenizer, analysis_text(p, texts[2 * i], texts[2 * i + 1])) for i, p in enumerate(problems)]


def analysis_calls(model, tokenizer, counts: list[int]) -> dict[str, list[list[int]]]:
    prompts = analysis_prompts(model, tokenizer)
    return {str(count): prompts[:count] for count in counts}


def rollout_calls(tokenizer, groups: list[str]) -> dict[str, list[list[int]]]:
    """For each PxG: P problems' prompts, each repeated G times in a row as TRL's sampler orders them."""
    from melrl.data import load_records
    from melrl.prompts import solve_text

    shapes = {spec: tuple(int(n) for n in spec.split("x")) for spec in groups}
    problems = [r.problem for r in load_records("arith", n=max(p for p, _ in shapes.values()), seed=0)]
    prompts = [prompt_ids(tokenizer, solve_text(problem, "short")) for problem in problems]
    return {spec: [ids for ids in prompts[:p] for _ in range(g)] for spec, (p, g) in shapes.items()}


def measure(model, tokenizer, calls: dict[str, list[list[int]]], new_tokens: int, repeats: int) -> dict:
    first = next(iter(calls.values()))
    generate(model, tokenizer, first[:2], 2, shared=True)  # warm-up
    results = {}
    for name, prompts in calls.items():
        seconds, outputs = {PLAIN: [], SHARED: []}, {}
        for _ in range(repeats):
            for way in (PLAIN, SHARED):
                elapsed, outputs[way] = generate(model, tokenizer, prompts, new_tokens, way == SHARED)
                seconds[way].append(elapsed)
        medians = {way: statistics.median(values) for way, values in seconds.items()}
        results[name] = {
            "rows": len(prompts),
            "prompt_tokens": sum(len(p) for p in prompts),
            "same_tokens": outputs[PLAIN] == outputs[SHARED],
            **{way: {"seconds": value, "tokens_per_second": len(prompts) * new_tokens / value}
               for way, value in medians.items()},
        }
        print(f"{name:>5}: plain {medians[PLAIN]:6.2f} s, shared {medians[SHARED]:6.2f} s "
              f"({medians[PLAIN] / medians[SHARED]:.2f}x), same tokens {results[name]['same_tokens']}", flush=True)
    return results


def plot(results: dict, path: Path) -> None:
    what = {"analysis": "analyses in the call", "rollout": "problems x samples in the call"}[results["phase"]]
    plot_two_ways(results, path, (PLAIN, SHARED), "seconds", list(results["calls"]), "seconds",
                  f"{what} ({results['new_tokens']} new tokens each)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--phase", choices=("analysis", "rollout"), default="analysis")
    parser.add_argument("--counts", default="1,2,4,10,16", help="analyses per call (--phase analysis)")
    parser.add_argument("--groups", default="4x4,2x8,16x4", help="problems x samples per call (--phase rollout)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", help="default: benchmarks/results/shared_prefix.json, or "
                                         "shared_prefix_rollouts.json for --phase rollout")
    args = parser.parse_args(argv)
    output = args.output or ROOT / "benchmarks" / "results" / (
        "shared_prefix.json" if args.phase == "analysis" else "shared_prefix_rollouts.json")

    model, tokenizer, threads = load_timed_model(args.model)
    if args.phase == "analysis":
        calls = analysis_calls(model, tokenizer, [int(c) for c in args.counts.split(",")])
    else:
        calls = rollout_calls(tokenizer, args.groups.split(","))
    results = {"model": args.model, "threads": threads, "phase": args.phase, "new_tokens": args.new_tokens,
               "repeats": args.repeats, "calls": measure(model, tokenizer, calls, args.new_tokens, args.repeats)}
    save_results(results, output, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
