"""How many tokens per decode step speculative decoding from the prompt could give the analyses of a run.

    .venv/bin/python benchmarks/prompt_lookup.py                                  # the demo's run (make demo)
    .venv/bin/python benchmarks/prompt_lookup.py runs/a/experiences.jsonl runs/b/experiences.jsonl --proposals 4

An analysis quotes the two solutions it compares, so n-gram lookup could propose its next tokens from its own prompt
(prompt-lookup decoding): find the last `--ngram` tokens (or fewer) earlier in the prompt and the text so far, propose
the up to k tokens that followed their most recent occurrence, and keep the proposals the model samples itself, plus
one sampled token. Accepting only what the model samples keeps the sampling distribution exact, so replaying the
recorded analyses (`experiences.jsonl`, re-tokenized; the prompt rebuilt as the trainer builds it) counts the decode
steps it would take. Tokens per step is the speedup's ceiling: each step then also verifies up to k proposals in
its forward pass. Saves `benchmarks/results/prompt_lookup.{json,png}`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]


def proposal(sequence: list[int], ngram: int, k: int) -> list[int]:
    """The up to `k` tokens that followed the most recent earlier occurrence of the longest tail of `sequence` of
    at most `ngram` tokens; empty when no tail recurs."""
    for n in range(min(ngram, len(sequence) - 1), 0, -1):
        tail = sequence[-n:]
        for start in range(len(sequence) - n - 1, -1, -1):
            if sequence[start:start + n] == tail:
                return sequence[start + n:start + n + k]
    return []


def decode_steps(prompt: list[int], generated: list[int], ngram: int, k: int) -> int:
    """Decode steps that generate `generated` after `prompt` when each step keeps the proposed tokens the model
    sampled (they match `generated`) and one sampled token."""
    sequence, done, steps = list(prompt), 0, 0
    while done < len(generated):
        proposed = proposal(sequence, ngram, k)
        matched = 0
        while (matched < len(proposed) and done + matched < len(generated)
               and proposed[matched] == generated[done + matched]):
            matched += 1
        taken = min(matched + 1, len(generated) - done)
        sequence += generated[done:done + taken]
        done += taken
        steps += 1
    return steps


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["proposals"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([str(r["k"]) for r in rows], [r["tokens_per_step"] for r in rows])
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="tokens proposed per step", ylabel="tokens per decode step",
           title=f"{results['analyses']} analyses, {results['tokens']} tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiences", nargs="*", default=[str(ROOT / "runs" / "demo" / "experiences.jsonl")])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="whose tokenizer the run used")
    parser.add_argument("--ngram", type=int, default=3)
    parser.add_argument("--proposals", default="2,4,10")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "prompt_lookup.json"))
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from melrl.jsonl import read_jsonl
    from melrl.models import resolve_model
    from melrl.prompts import analysis_text, render

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    pairs = []
    for path in args.experiences:
        for record in read_jsonl(path):
            user_text = analysis_text(record["problem"], incorrect=record["incorrect_solution"],
                                      correct=record["correct_solution"])
            pairs.append((tokenizer(text=render(tokenizer, user_text))["input_ids"],
                          tokenizer(record["analysis"], add_special_tokens=False)["input_ids"]))
    if not pairs:
        parser.error(f"no analyses in {', '.join(args.experiences)}")
    tokens = sum(len(generated) for _, generated in pairs)
    results = {"experiences": args.experiences, "analyses": len(pairs), "tokens": tokens, "ngram": args.ngram,
               "proposals": []}
    for k in map(int, args.proposals.split(",")):
        steps = sum(decode_steps(prompt, generated, args.ngram, k) for prompt, generated in pairs)
        results["proposals"].append({"k": k, "decode_steps": steps, "tokens_per_step": tokens / steps})
        print(f"{k:3d} proposed: {tokens} tokens in {steps} decode steps, {tokens / steps:.2f} tokens per step",
              flush=True)
    save_results(results, args.output, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
