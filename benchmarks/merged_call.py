"""A step's rollouts and analyses generated in separate calls against one call, on CPU.

    .venv/bin/python benchmarks/merged_call.py                  # embedded SmolLM2-135M, 4 x 4 rollouts, 1-4 analyses
    .venv/bin/python benchmarks/merged_call.py --model PATH --counts 2 --repeats 1

A step has far fewer analyses than rollouts, and a decode step of a few sequences costs nearly what one of 16
does, so the analysis phase generates fewer tokens per second than the rollouts. Analyses could join a rollout
call instead: those of the previous step's pairs, at the price of a one-step lag. This script times what that
would save: one rollout call of 4 problems x 4 samples (the demo's template and prompts) and one call of 1, 2 or 4
real analysis prompts (built as `benchmarks/shared_prefix.py` builds them), made one after the other ("separate")
or as one left-padded call ("one call"), both with the trainer's shared prefill and CPU decoding. Every row
decodes exactly `--new-tokens` tokens, so both ways do the same work. Median of `--repeats`, alternating the two
ways. Saves `benchmarks/results/merged_call.{json,png}`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from results_file import plot_two_ways, save_results
from shared_prefix import analysis_prompts, generate, rollout_calls
from timed_model import load_timed_model

ROOT = Path(__file__).resolve().parents[1]
SEPARATE, ONE_CALL = "separate", "one call"


def seconds(model, tokenizer, rollouts: list[list[int]], analyses: list[list[int]], new_tokens: int,
            way: str) -> float:
    if way == ONE_CALL:
        return generate(model, tokenizer, rollouts + analyses, new_tokens, shared=True)[0]
    return sum(generate(model, tokenizer, prompts, new_tokens, shared=True)[0] for prompts in (rollouts, analyses))


def measure(model, tokenizer, rollouts: list[list[int]], analyses: list[list[int]], counts: list[int],
            new_tokens: int, repeats: int) -> dict:
    generate(model, tokenizer, rollouts[:2], 2, shared=True)  # warm-up
    results = {}
    for count in counts:
        timed = {SEPARATE: [], ONE_CALL: []}
        for _ in range(repeats):
            for way in timed:
                timed[way].append(seconds(model, tokenizer, rollouts, analyses[:count], new_tokens, way))
        tokens = (len(rollouts) + count) * new_tokens
        medians = {way: statistics.median(values) for way, values in timed.items()}
        results[str(count)] = {
            "rollouts": len(rollouts),
            "analyses": count,
            "analysis_prompt_tokens": sum(map(len, analyses[:count])),
            **{way: {"seconds": value, "tokens_per_second": tokens / value} for way, value in medians.items()},
        }
        print(f"{len(rollouts)} rollouts + {count} analyses: separate {medians[SEPARATE]:6.2f} s, "
              f"one call {medians[ONE_CALL]:6.2f} s", flush=True)
    return results


def plot(results: dict, path: Path) -> None:
    plot_two_ways(results, path, (SEPARATE, ONE_CALL), "seconds", list(results["calls"]), "seconds",
                  f"analyses with {results['rollouts']} rollouts ({results['new_tokens']} new tokens each)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--counts", default="1,2,4", help="analyses joined to the rollouts")
    parser.add_argument("--groups", default="4x4", help="problems x samples of the rollout call")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "merged_call.json"))
    args = parser.parse_args(argv)

    model, tokenizer, threads = load_timed_model(args.model)
    counts = [int(c) for c in args.counts.split(",")]
    rollouts = rollout_calls(tokenizer, [args.groups])[args.groups]
    analyses = analysis_prompts(model, tokenizer)
    results = {"model": args.model, "threads": threads, "rollouts": len(rollouts), "new_tokens": args.new_tokens,
               "repeats": args.repeats,
               "calls": measure(model, tokenizer, rollouts, analyses, counts, args.new_tokens, args.repeats)}
    save_results(results, args.output, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
