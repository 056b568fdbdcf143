"""Analysis generation with the shared instruction prefilled once against plain batched `generate`, on CPU.

    .venv/bin/python benchmarks/shared_prefix.py                  # embedded SmolLM2-135M, 1 to 16 analyses
    .venv/bin/python benchmarks/shared_prefix.py --model PATH --counts 2,4 --repeats 1

Every analysis prompt begins with the same instruction of about 480 tokens (`melrl/shared_prefix.py`). The script
lets the model solve 16 `arith` problems twice (the `short` template, 48 new tokens), builds one analysis prompt
per problem from its two solutions, and times one analysis call of 1, 2, 4, 10 and 16 prompts both ways, with
the trainer's CPU decoding on for both. Every row decodes exactly `--new-tokens` tokens, so both ways do the same
work and, with the same seed, sample the same tokens. Each call runs `--repeats` times, alternating the two ways;
the median counts. Saves `benchmarks/results/shared_prefix.{json,png}`.
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
PLAIN, SHARED = "plain", "shared prefix"


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


def measure(model, tokenizer, counts: list[int], new_tokens: int, repeats: int) -> dict:
    prompts = analysis_prompts(model, tokenizer)
    generate(model, tokenizer, prompts[:2], 2, shared=True)  # warm-up
    results = {}
    for count in counts:
        seconds, outputs = {PLAIN: [], SHARED: []}, {}
        for _ in range(repeats):
            for name in (PLAIN, SHARED):
                elapsed, outputs[name] = generate(model, tokenizer, prompts[:count], new_tokens, name == SHARED)
                seconds[name].append(elapsed)
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        results[str(count)] = {
            "prompt_tokens": sum(len(p) for p in prompts[:count]),
            "same_tokens": outputs[PLAIN] == outputs[SHARED],
            **{name: {"seconds": value, "tokens_per_second": count * new_tokens / value}
               for name, value in medians.items()},
        }
        print(f"{count:3d} analyses: plain {medians[PLAIN]:6.2f} s, shared prefix {medians[SHARED]:6.2f} s "
              f"({medians[PLAIN] / medians[SHARED]:.2f}x), same tokens {results[str(count)]['same_tokens']}",
              flush=True)
    return results


def plot(results: dict, path: Path) -> None:
    plot_two_ways(results, path, (PLAIN, SHARED), "seconds", list(results["calls"]), "seconds",
                  f"analyses in the call ({results['new_tokens']} new tokens each)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--counts", default="1,2,4,10,16")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "shared_prefix.json"))
    args = parser.parse_args(argv)

    model, tokenizer, threads = load_timed_model(args.model)
    counts = [int(c) for c in args.counts.split(",")]
    results = {"model": args.model, "threads": threads, "new_tokens": args.new_tokens, "repeats": args.repeats,
               "calls": measure(model, tokenizer, counts, args.new_tokens, args.repeats)}
    save_results(results, args.output, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
