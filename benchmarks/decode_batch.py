"""Why MEL's analysis phase generates fewer tokens per second than the rollouts: cost of one decode step vs batch.

    .venv/bin/python benchmarks/decode_batch.py                 # embedded SmolLM2-135M
    .venv/bin/python benchmarks/decode_batch.py --model PATH --batches 1,2,4,8,16

A decode step reads every weight once whatever the batch, so while the batch is small its time hardly grows
with the batch and tokens per second grow in proportion to it. Rollouts decode G x prompts sequences at once;
the analysis and replay phases decode one sequence per pair, typically a handful. The script times greedy
decode steps of random prompts at a rollout-like context (50 tokens) and an analysis-like one (700 tokens) for
each batch size and saves `benchmarks/results/decode_batch.{json,png}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def decode_step_seconds(model, batch: int, context: int, new_tokens: int) -> float:
    """Seconds per decode step: a full generation minus its prefill, over the decode steps."""
    import torch

    ids = torch.randint(100, 1000, (batch, context))
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
    with torch.no_grad():
        start = time.perf_counter()
        model.generate(**kwargs, max_new_tokens=1, min_new_tokens=1)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(**kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        total = time.perf_counter() - start
    return max(total - prefill, 1e-9) / (new_tokens - 1)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for context, rows in results["contexts"].items():
        batches = [row["batch"] for row in rows]
        left.plot(batches, [row["ms_per_step"] for row in rows], marker="o", label=f"context {context}")
        right.plot(batches, [row["tokens_per_second"] for row in rows], marker="o", label=f"context {context}")
    left.set(xlabel="sequences decoded together", ylabel="ms per decode step", title="one decode step")
    right.set(xlabel="sequences decoded together", ylabel="generated tokens/s", title="throughput")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=8)
    fig.suptitle(results["model"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--contexts", default="50,700")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--output", default=str(RESULTS / "decode_batch.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from melrl.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(args.model)
    model.eval()
    decode_step_seconds(model, 1, 8, 4)  # warm-up
    results = {"model": args.model, "threads": torch.get_num_threads(), "contexts": {}}
    for context in map(int, args.contexts.split(",")):
        rows = []
        for batch in map(int, args.batches.split(",")):
            seconds = decode_step_seconds(model, batch, context, args.new_tokens)
            rows.append({"batch": batch, "ms_per_step": 1000 * seconds, "tokens_per_second": batch / seconds})
            print(f"context {context:4d}  batch {batch:3d}: {1000 * seconds:6.1f} ms/step, "
                  f"{batch / seconds:6.1f} tokens/s", flush=True)
        results["contexts"][str(context)] = rows
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    plot(results, output.with_suffix(".png"))
    print(f"saved {output} and {output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
