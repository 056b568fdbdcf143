"""Evaluation throughput on the CPU: `melrl.evaluation.evaluate` against plain batched `model.generate`.

Both generate, for the same N problems, one greedy answer and k samples at temperature T with the same token
budget and at most the same number of sequences per generate call. `evaluate` puts a problem's greedy and sampled
rows in one call, sorts prompts by length, and extracts and verifies every answer; the plain baseline only generates (greedy batches, then sampled batches with `num_return_sequences=k`). Prints problems per minute and generated tokens per second for both, and writes
benchmarks/results/eval_throughput.{json,png}.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/eval_throughput.py [--problems 16] [--max-new-tokens 64] [--k 8]

On a CPU that other processes also use, two threads can be several times slower than one (each small matmul
waits for a descheduled thread); pass `--threads 1` there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from melrl.evaluation.runner import evaluate, load_problems
from melrl.models import load_model_and_tokenizer
from melrl.verify.verifier import default_pool
from results_file import save_results

RESULTS = Path(__file__).resolve().parent / "results"


def plain_generate(model, tokenizer, prompts: list[str], *, k: int, temperature: float, max_new_tokens: int,
                   batch_size: int, seed: int) -> int:
    """Greedy then sampled batched `generate` on `prompts`; returns the number of generated tokens."""
    torch.manual_seed(seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    tokens = 0
    runs = [(batch_size, dict(do_sample=False))]
    runs.append((max(1, batch_size // k), dict(do_sample=True, temperature=temperature, top_k=None, top_p=None,
                                                num_return_sequences=k)))
    for per_call, options in runs:
        for start in range(0, len(prompts), per_call):
            encoded = tokenizer(prompts[start : start + per_call], return_tensors="pt", padding=True,
                                padding_side="left")
            with torch.no_grad():
                out = model.generate(**encoded, max_new_tokens=max_new_tokens, pad_token_id=pad, **options)
            tokens += sum(_generated(row, eos) for row in out[:, encoded["input_ids"].shape[1]:].tolist())
    return tokens


def _generated(row: list[int], eos: int) -> int:
    return row.index(eos) + 1 if eos in row else len(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--benchmark", default="gsm8k")
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=36, help="sequences per generate call (both methods)")
    parser.add_argument("--template", default="qwen-boxed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 on a machine busy with other work)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(args.model)
    model.eval()
    prompts = [p.prompt for p in load_problems([args.benchmark], tokenizer, args.template, limit=args.problems)]
    default_pool().warmup()  # the verifier's worker processes import sympy once; keep that out of the timing
    with torch.no_grad():  # warm-up
        model.generate(**tokenizer(prompts[:1], return_tensors="pt"), max_new_tokens=4, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id)

    start = time.perf_counter()
    plain_tokens = plain_generate(model, tokenizer, prompts, k=args.k, temperature=args.temperature,
                                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=0)
    plain_seconds = time.perf_counter() - start

    start = time.perf_counter()
    results = evaluate((model, tokenizer), [args.benchmark], template=args.template, k=args.k,
                       temperature=args.temperature, max_new_tokens=args.max_new_tokens, limit=args.problems,
                       batch_size=args.batch_size, progress=False, label=args.model)
    ours_seconds = time.perf_counter() - start
    ours_tokens = results["throughput"]["generated_tokens"]

    report = {
        "settings": {**vars(args), "threads": torch.get_num_threads()},
        "evaluate": _rates(len(prompts), ours_tokens, ours_seconds),
        "plain_generate": _rates(len(prompts), plain_tokens, plain_seconds),
        "evaluate_breakdown": {key: results["throughput"][key] for key in
                               ("generation_seconds", "verification_seconds")},
        "evaluate_metrics": results["metrics"][args.benchmark],
    }
    save_results(report, Path(args.output) / "eval_throughput.json", _plot)
    print(f"{len(prompts)} {args.benchmark} problems, greedy + {args.k} samples, max_new_tokens {args.max_new_tokens}, "
          f"batch {args.batch_size} sequences, {torch.get_num_threads()} threads")
    for name in ("evaluate", "plain_generate"):
        r = report[name]
        print(f"{name:15s} {r['problems_per_minute']:8.2f} problems/min {r['tokens_per_second']:8.1f} tokens/s "
              f"({r['generated_tokens']} tokens in {r['seconds']:.1f} s)")


def _rates(problems: int, tokens: int, seconds: float) -> dict:
    return {"problems": problems, "generated_tokens": tokens, "seconds": round(seconds, 2),
            "problems_per_minute": round(60 * problems / seconds, 2), "tokens_per_second": round(tokens / seconds, 1)}


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["evaluate", "plain_generate"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, title in zip(axes, ("problems_per_minute", "tokens_per_second"),
                              ("problems / minute", "generated tokens / s")):
        values = [report[n][key] for n in names]
        ax.bar(["melrl evaluate", "plain generate"], values, color=["#c0392b", "#7f8c8d"])
        ax.set_title(title)
        ax.set_ylim(0, 1.15 * max(values))
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    s = report["settings"]
    fig.suptitle(f"{s['model']}, {s['problems']} {s['benchmark']} problems, greedy + {s['k']} samples, "
                 f"{s['max_new_tokens']} new tokens, CPU {s['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
