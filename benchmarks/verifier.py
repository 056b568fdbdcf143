"""Verifier throughput: 1024 realistic completions, then the same batch with 5 % pathological answers.

    .venv/bin/python benchmarks/verifier.py [--n 1024] [--timeout 5]

Completions are built from real rows (MATH-500, GSM8K, AMC23, OlympiadBench): a short worked text ending in
`\\boxed{}` with the gold answer in an equivalent form, or a wrong one, half and half. Results (verifications per
second, seconds per batch, verdict accuracy against the known truth) go to `benchmarks/results/verifier.json`
and a PNG chart beside it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

PATHOLOGICAL = [
    "9^{9^{9^{9^{9}}}}",
    "100000!",
    "{" * 3000 + "1" + "}" * 3000,
    "x" * 1_000_000,
    "(x+y+z+w+1)^{20}",
    "10^{10^{3}\\cdot 10^{5}}",
    "\\frac{" * 500 + "1" + "}{2}" * 500,
]


def realistic(n: int, seed: int) -> tuple[list[str], list[str], list[bool]]:
    from melrl.data import load_records

    rng = random.Random(seed)
    pool = []
    for name, split in (("math500", None), ("gsm8k", "test"), ("amc23", None), ("olympiadbench", None)):
        pool += load_records(name, split)
    completions, golds, truth = [], [], []
    for i in range(n):
        record = rng.choice(pool)
        correct = i % 2 == 0
        answer = record.answer if correct else wrong_answer(record.answer, rng)
        completions.append(f"Let us work through the problem step by step.\n... so the result is \\boxed{{{answer}}}.")
        golds.append(record.answer)
        truth.append(correct)
    return completions, golds, truth


def wrong_answer(gold: str, rng: random.Random) -> str:
    digits = [i for i, ch in enumerate(gold) if ch.isdigit()]
    if digits:
        i = rng.choice(digits)
        return gold[:i] + str((int(gold[i]) + 1 + rng.randrange(8)) % 10) + gold[i + 1 :]
    return gold + "+1"


def timed(completions, golds, timeout):
    from melrl.verify.verifier import verify_batch

    start = time.perf_counter()
    verdicts = verify_batch(completions, golds, answer_format="boxed", timeout=timeout)
    return verdicts, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "verifier.json"))
    args = parser.parse_args()
    from melrl.verify.verifier import default_pool

    default_pool().warmup()
    completions, golds, truth = realistic(args.n, args.seed)
    verdicts, seconds = timed(completions, golds, args.timeout)
    agreement = sum(v == t for v, t in zip(verdicts, truth)) / len(truth)

    rng = random.Random(args.seed + 1)
    bad = rng.sample(range(args.n), args.n // 20)
    mixed = list(completions)
    for k, i in enumerate(bad):
        mixed[i] = f"so \\boxed{{{PATHOLOGICAL[k % len(PATHOLOGICAL)]}}}"
    _, mixed_seconds = timed(mixed, golds, args.timeout)
    stats = default_pool().stats.as_dict()

    result = {
        "n": args.n, "timeout": args.timeout, "workers": default_pool().workers,
        "realistic": {"seconds": seconds, "per_second": args.n / seconds, "agreement_with_truth": agreement},
        "with_5pct_pathological": {"seconds": mixed_seconds, "per_second": args.n / mixed_seconds,
                                   "pathological": len(bad)},
        "pool_stats": stats,
    }
    print(json.dumps(result, indent=2))
    save_results(result, args.output, plot)
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds, mixed_seconds = result["realistic"]["seconds"], result["with_5pct_pathological"]["seconds"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(["realistic", "5% pathological"], [seconds, mixed_seconds], color=["tab:blue", "tab:orange"])
    ax.set_ylabel(f"seconds for {result['n']} verifications")
    ax.set_title(f"{result['n'] / seconds:.0f} vs {result['n'] / mixed_seconds:.0f} verifications/s "
                 f"({result['workers']} workers, timeout {result['timeout']:g} s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
