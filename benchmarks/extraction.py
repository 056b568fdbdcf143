"""Answer extraction against a published grader: 5,276 GSM8K solutions written by GPT-3 models, each with
OpenAI's own verdict (`/work/shared/data/graded/openai_gsm8k_solutions.jsonl`).

    .venv/bin/python benchmarks/extraction.py [--data FILE] [--output benchmarks/results/extraction.json]

For every answer format (`auto` and each explicit one) the script verifies all completions against their gold
answers with `verify_batch` and reports how often our verdict agrees with the published one, with the counts of
each kind of disagreement and of completions where no answer was found. The completions end in "A: <answer>"; the
same completions are also scored with that last line rewritten in other common final-answer styles ("#### 18",
"The answer is 18.", "Answer: 18", "\\boxed{18}"), which leaves the answer, and so the published verdict, unchanged.
Results go to `benchmarks/results/extraction.json` and a bar chart beside it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "graded" / "openai_gsm8k_solutions.jsonl"
FINAL_LINE = re.compile(r"\nA: ([^\n]*)$")
STYLES = {  # the final "A: <answer>" line rewritten; "original" keeps it
    "original": None,
    "hashes": "\n#### {}",
    "the_answer_is": "\nThe answer is {}.",
    "answer_line": "\nAnswer: {}",
    "boxed": "\nSo the final answer is $\\boxed{{{}}}$.",
}


def restyle(completion: str, style: str) -> str:
    template = STYLES[style]
    if template is None:
        return completion
    return FINAL_LINE.sub(lambda m: template.format(m.group(1).strip()), completion.rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "extraction.json")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per verification")
    parser.add_argument("--show", type=int, default=0, help="print this many disagreements per format")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from melrl.verify.answers import ANSWER_FORMATS, extract_answer
    from melrl.verify.verifier import VerifierPool

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    completions = [r["completion"] for r in rows]
    golds = [r["gold"] for r in rows]
    published = [bool(r["verdict"]) for r in rows]
    formats, styles = {}, {}
    with VerifierPool(timeout=args.timeout) as pool:
        pool.warmup()
        for style in STYLES:
            texts = [restyle(c, style) for c in completions]
            for fmt in ANSWER_FORMATS:
                start = time.perf_counter()
                ours = pool.verify_batch(texts, golds, answer_format=fmt)
                seconds = time.perf_counter() - start
                agree = sum(a == b for a, b in zip(ours, published))
                styles.setdefault(style, {})[fmt] = round(agree / len(rows), 6)
                print(f"{style:14s} {fmt:12s} agreement {agree}/{len(rows)} = {100 * agree / len(rows):.2f} %",
                      flush=True)
                if style != "original":
                    continue
                formats[fmt] = {
                    "agreement": round(agree / len(rows), 6),
                    "agree": agree,
                    "we_accept_published_rejects": sum(a and not b for a, b in zip(ours, published)),
                    "we_reject_published_accepts": sum(b and not a for a, b in zip(ours, published)),
                    "no_answer": sum(extract_answer(c, fmt) is None for c in texts),
                    "seconds": round(seconds, 3),
                }
                shown = 0
                for row, a, b in zip(rows, ours, published):
                    if a != b and shown < args.show:
                        shown += 1
                        print(f"  ours={a} published={b} gold={row['gold']!r} extracted="
                              f"{extract_answer(row['completion'], fmt)!r} tail={row['completion'][-80:]!r}")
    best_explicit = max((f for f in formats if f != "auto"), key=lambda f: formats[f]["agreement"])
    result = {
        "data": "openai/grade-school-math @ 3101c7d5: example_model_solutions.jsonl "
                "(graded/openai_gsm8k_solutions.jsonl)",
        "rows": len(rows),
        "published_correct": sum(published),
        "formats": formats,
        "agreement_by_style": styles,
        "best_explicit": best_explicit,
        "auto_at_least_best_explicit": formats["auto"]["agreement"] >= formats[best_explicit]["agreement"],
    }
    save_results(result, args.output, plot)
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = result["agreement_by_style"]
    formats = list(result["formats"])
    width = 0.8 / len(formats)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for j, fmt in enumerate(formats):
        xs = [i + (j - (len(formats) - 1) / 2) * width for i in range(len(styles))]
        values = [100 * styles[s][fmt] for s in styles]
        bars = ax.bar(xs, values, width, label=fmt)
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in values], fontsize=6)
    ax.set_xticks(range(len(styles)), [s.replace("_", " ") for s in styles])
    ax.set_ylim(0, 125)
    ax.set_ylabel("agreement with published verdict (%)")
    ax.set_xlabel("style of the final-answer line")
    ax.set_title(f"GSM8K solutions ({result['rows']}): our verdict vs OpenAI's, by answer_format", fontsize=9)
    ax.legend(fontsize=7, ncol=len(formats), loc="upper center", title="answer_format", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
