"""transformers' continuous batching (`generate_batch`) against batched `generate` on CPU, for the trainer's phases.

    .venv/bin/python benchmarks/continuous_batching.py                 # embedded SmolLM2-135M
    .venv/bin/python benchmarks/continuous_batching.py --model PATH --num-blocks 64 --max-batch-tokens 512

TRL's `use_transformers_continuous_batching` makes every generation of `MELTrainer` (rollouts, analyses, replays)
one `generate_batch` call. The script times both engines, with the trainer's CPU decoding (`fast_cpu_decoding`)
on for both, on the calls of a demo-sized MEL step: 16 rollouts (4 `arith` problems x 4, the `short` template,
96 new tokens at temperature 0.7) and then 2 analyses of pairs of those rollouts (the analysis template, 128 new
tokens). Sequences stop at their end-of-sequence token, so the lengths vary as in training; continuous batching
drops a finished sequence from the batch, `generate` keeps decoding it. Each call runs `--repeats` times after a
warm-up; the median counts. `--num-blocks` and `--max-batch-tokens` bound the paged cache
(`ContinuousBatchingConfig`); 0 leaves them to transformers, which sizes its buffers to the machine's free memory
and fills them at every call. Saves `benchmarks/results/continuous_batching.{json,png}`.
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
PROBLEMS, ROLLOUTS_PER_PROBLEM, ANALYSES = 4, 4, 2
NEW_TOKENS = {"rollouts": 96, "analyses": 128}
GENERATE, CONTINUOUS = "generate", "continuous batching"


def timed_call(model, tokenizer, engine: str, prompts: list[list[int]], new_tokens: int, cb_config):
    """Seconds for one call and the completions it generated (up to and with the end-of-sequence token)."""
    import torch
    from transformers import GenerationConfig

    from melrl.cpu_decoding import fast_cpu_decoding

    eos = tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=True, temperature=0.7, top_k=0,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
    continuous = engine == CONTINUOUS
    # generate_batch packs every sequence's token into one row, so the row count does not tell the batch size
    start = time.perf_counter()
    with torch.no_grad(), fast_cpu_decoding(model, sequences=1 if continuous else len(prompts)):
        if continuous:
            outputs = model.generate_batch(prompts, generation_config=config, continuous_batching_config=cb_config,
                                           progress_bar=False)
            completions = [list(o.generated_tokens) for o in outputs.values()]
        else:
            batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")  # left-padded
            rows = model.generate(**batch, generation_config=config)[:, batch["input_ids"].size(1):].tolist()
            completions = [row[: row.index(eos) + 1] if eos in row else row for row in rows]
    return time.perf_counter() - start, completions


def phase_prompts(tokenizer, problems: list[str], rollouts: list[list[int]] | None) -> list[list[int]]:
    """The rollout prompts, or, given the rollouts, analysis prompts for pairs of them (one pair per problem)."""
    from melrl.prompts import analysis_text, solve_text

    if rollouts is None:
        texts = [solve_text(problem, "short") for problem in problems for _ in range(ROLLOUTS_PER_PROBLEM)]
    else:
        solutions = [tokenizer.decode(ids, skip_special_tokens=True) for ids in rollouts]
        first = [ROLLOUTS_PER_PROBLEM * i for i in range(ANALYSES)]
        texts = [analysis_text(problems[i // ROLLOUTS_PER_PROBLEM], solutions[i], solutions[i + 1]) for i in first]
    return [prompt_ids(tokenizer, text) for text in texts]


def measure(model, tokenizer, cb_config, repeats: int) -> dict:
    from melrl.data import load_records

    problems = [r.problem for r in load_records("arith", n=PROBLEMS, seed=0)]
    results, rollouts = {}, None
    for name, new_tokens in NEW_TOKENS.items():
        prompts = phase_prompts(tokenizer, problems, rollouts)
        results[name] = {"sequences": len(prompts), "new_tokens": new_tokens, "prompt_tokens": sum(map(len, prompts))}
        for engine in (GENERATE, CONTINUOUS):
            _, completions = timed_call(model, tokenizer, engine, prompts, new_tokens, cb_config)  # warm-up
            rollouts = rollouts or completions
            runs = [timed_call(model, tokenizer, engine, prompts, new_tokens, cb_config) for _ in range(repeats)]
            seconds = statistics.median(s for s, _ in runs)
            tokens = statistics.median(sum(map(len, c)) for _, c in runs)
            results[name][engine] = {"seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds}
            print(f"{name:9s} {engine:20s} {seconds:6.2f} s  {tokens:.0f} tokens  {tokens / seconds:6.1f} tokens/s",
                  flush=True)
    return results


def plot(results: dict, path: Path) -> None:
    ticks = [f"{name}\n({call['sequences']} sequences)" for name, call in results["calls"].items()]
    plot_two_ways(results, path, (GENERATE, CONTINUOUS), "tokens_per_second", ticks, "generated tokens / s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--num-blocks", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "continuous_batching.json"))
    args = parser.parse_args(argv)

    import torch
    from transformers import ContinuousBatchingConfig

    torch.manual_seed(0)
    model, tokenizer, threads = load_timed_model(args.model)
    cb_config = ContinuousBatchingConfig(num_blocks=args.num_blocks or None,
                                         max_batch_tokens=args.max_batch_tokens or None)
    results = {"model": args.model, "threads": threads, "num_blocks": args.num_blocks,
               "max_batch_tokens": args.max_batch_tokens, "repeats": args.repeats,
               "calls": measure(model, tokenizer, cb_config, args.repeats)}
    save_results(results, args.output, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
