"""Decode steps with transformers' concatenating cache layer against `melrl.kv_cache.GrowingLayer`.

    .venv/bin/python benchmarks/kv_cache.py                 # embedded SmolLM2-135M
    .venv/bin/python benchmarks/kv_cache.py --model PATH --calls 1x700,16x200 --new-tokens 64

`DynamicLayer` copies the whole cache of a layer at every decode step; `GrowingLayer`, which every transformers
generation of the trainer and the evaluation decodes into, writes each step into spare room. The script times
sampled decode steps (a generation minus its prefill, median of `--repeats`) of random prompts for each call,
ROWSxCONTEXT: analysis-like calls (a few rows at 700 and 2000 tokens) and rollout-like ones (16 and 64 rows at
short contexts), with the trainer's CPU decoding on for both, and checks that both sample the same tokens. Saves
`benchmarks/results/kv_cache.{json,png}`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from decode_batch import decode_step_seconds
from results_file import plot_two_ways, save_results
from timed_model import load_timed_model

ROOT = Path(__file__).resolve().parents[1]
DYNAMIC, GROWING = "DynamicLayer", "GrowingLayer"


def new_cache_factory(model, way: str):
    from transformers import DynamicCache

    from melrl.kv_cache import growing_cache

    if way == GROWING:
        return lambda: growing_cache(DynamicCache(config=model.config))
    return lambda: DynamicCache(config=model.config)


def same_tokens(model, rows: int, context: int, new_tokens: int) -> bool:
    """Whether a seeded sampled generation draws the same tokens into both caches."""
    import torch

    ids = torch.randint(100, 1000, (rows, context))
    drawn = []
    for way in (DYNAMIC, GROWING):
        torch.manual_seed(0)
        with torch.no_grad():
            drawn.append(model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                        max_new_tokens=new_tokens, pad_token_id=0,
                                        past_key_values=new_cache_factory(model, way)()))
    return torch.equal(*drawn)


def plot(results: dict, path: Path) -> None:
    plot_two_ways(results, path, (DYNAMIC, GROWING), "ms_per_step", list(results["calls"]), "ms per decode step",
                  xlabel="rows x context")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--calls", default="1x700,2x700,4x700,1x2000,16x60,16x200,64x60")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "kv_cache.json"))
    args = parser.parse_args()

    from melrl.cpu_decoding import fast_cpu_decoding

    model, _, threads = load_timed_model(args.model)
    decode_step_seconds(model, 1, 8, 4)  # warm-up
    results = {"model": args.model, "threads": threads, "new_tokens": args.new_tokens, "calls": {}}
    for call in args.calls.split(","):
        rows, context = map(int, call.split("x"))
        timings = {}
        with fast_cpu_decoding(model, sequences=rows):
            for way in (DYNAMIC, GROWING):
                seconds = statistics.median(
                    decode_step_seconds(model, rows, context, args.new_tokens, new_cache_factory(model, way))
                    for _ in range(args.repeats))
                timings[way] = {"ms_per_step": 1000 * seconds, "tokens_per_second": rows / seconds}
            timings["same_tokens"] = same_tokens(model, rows, context, new_tokens=8)
        results["calls"][call] = timings
        dynamic, growing = (timings[way]["ms_per_step"] for way in (DYNAMIC, GROWING))
        print(f"{call:>8}: {dynamic:6.1f} ms/step {DYNAMIC}, {growing:6.1f} {GROWING} "
              f"({dynamic / growing:.2f}x), same tokens: {timings['same_tokens']}", flush=True)
    save_results(results, args.output, plot)
    return 0 if all(call["same_tokens"] for call in results["calls"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
