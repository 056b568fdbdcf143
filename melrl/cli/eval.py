"""`melrl eval`: Pass@1 / Avg@k / Pass@k of a model on math benchmarks, and `--compare` of finished evaluations."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PAPER_BENCHMARKS = "aime24,aime25,amc23,math500,olympiadbench"
EVAL_ROOT = Path("runs") / "eval"


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register `eval` on the `melrl` sub-command parsers; returns its parser."""
    p = subparsers.add_parser(
        "eval", help="Pass@1 (greedy), Avg@k and Pass@k on math benchmarks; --compare DIR ... for a side-by-side table",
        description="Evaluate a model as in the paper's Table 1: Pass@1 from one greedy sample, Avg@k and Pass@k "
                    "from k samples at temperature T. Interrupted runs continue where they stopped when rerun "
                    "with the same --output-dir.",
    )
    p.add_argument("--model", help="embedded name, local folder or hub id (required unless --compare)")
    p.add_argument("--benchmarks", default=PAPER_BENCHMARKS,
                   help=f"comma-separated: aime24, aime25, amc23, math500, olympiadbench, gsm8k, minerva_math "
                        f"(default: {PAPER_BENCHMARKS})")
    p.add_argument("--template", default="qwen-boxed", help="solve template: qwen-boxed, dapo or short")
    p.add_argument("--answer-format", choices=("auto", "boxed", "answer_line", "last_number"), default=None,
                   help="how final answers are read on every benchmark (default: per benchmark, the template's "
                        "mode, and auto for gsm8k; recorded in results.json as config.answer_formats)")
    p.add_argument("--k", type=int, default=8, help="samples per problem for Avg@k and Pass@k; 0: greedy only")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature of the k samples")
    p.add_argument("--no-greedy", dest="greedy", action="store_false", help="skip the greedy Pass@1 sample")
    p.add_argument("--max-new-tokens", type=int, default=4096, help="token budget of each answer")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per generate call (default: 32 for transformers, 2048 for vLLM)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems of each benchmark")
    p.add_argument("--ids", default=None,
                   help="comma-separated problem ids, bare or as benchmark:id (e.g. aime24:60,math500:test/algebra/1.json)")
    p.add_argument("--output-dir", default=None,
                   help="where samples.jsonl, results.json and results.md go (default: runs/eval/<model>); "
                        "with --compare, where comparison.md goes")
    p.add_argument("--backend", choices=("auto", "transformers", "vllm"), default="auto",
                   help="auto: vLLM if installed and a GPU is present, else transformers")
    p.add_argument("--dtype", default=None, help="weights dtype (default: bfloat16 on a GPU, float32 on a CPU)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; every sample's own seed derives from it")
    p.add_argument("--data-dir", "--data_dir", default=None,
                   help="data folder (default: $MELRL_DATA_DIR, else the per-user cache)")
    p.add_argument("--verifier-timeout", type=float, default=None, help="seconds per verification (default 5)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--experiences", metavar="RUN_DIR_OR_JSONL", default=None,
                   help="experience bank: put the most relevant kept meta-experiences of this MEL run (its "
                        "experiences.jsonl) in each prompt, with the paper's Empirical Validation Prompt (not in "
                        "the paper: a baseline against internalization)")
    p.add_argument("--retrieve", type=int, metavar="K", default=None,
                   help="with --experiences: how many entries per problem, retrieved with BM25 (default 3)")
    p.add_argument("--compare", nargs="+", metavar="DIR", default=None,
                   help="print one table with a row per finished evaluation directory instead of evaluating")
    return p


def default_output_dir(model: str, experiences: str | None = None, retrieve: int | None = None) -> Path:
    """runs/eval/<model>, with path separators turned into "_" ("Qwen/Qwen3-4B-Base" → "Qwen_Qwen3-4B-Base");
    with a bank, runs/eval/<model>+bank-<bank>-k<K> ("...Base+bank-runs_qwen3_4b_mel-k3")."""
    name = _safe_name(model) or "model"
    if experiences is not None:
        from melrl.evaluation.bank import DEFAULT_RETRIEVE, EXPERIENCES_FILE

        bank = str(experiences).rstrip("/\\").removesuffix(EXPERIENCES_FILE)
        name += f"+bank-{_safe_name(bank) or 'experiences'}-k{retrieve or DEFAULT_RETRIEVE}"
    return EVAL_ROOT / name


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/\\")).strip("._")


def run_eval(args: argparse.Namespace) -> int:
    """Run `melrl eval` from parsed arguments; prints the Markdown table; returns the exit status."""
    if args.compare:
        return _run_compare(args.compare, args.output_dir)
    if not args.model:
        print("melrl eval: --model is required (or --compare DIR ...)", file=sys.stderr)
        return 2
    if args.retrieve is not None and (args.experiences is None or args.retrieve < 1):
        print("melrl eval: --retrieve K needs K >= 1 and --experiences RUN_DIR_OR_JSONL", file=sys.stderr)
        return 2
    check_eval_inputs(args)
    from melrl.evaluation import evaluate
    from melrl.evaluation.bank import DEFAULT_RETRIEVE, ExperienceBank, ExperienceBankError
    from melrl.evaluation.tables import results_markdown

    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model, args.experiences,
                                                                                  args.retrieve)
    try:
        bank = ExperienceBank(args.experiences) if args.experiences is not None else None
    except ExperienceBankError as error:
        print(f"melrl eval: {error}", file=sys.stderr)
        return 2
    try:
        results = evaluate(
            args.model, args.benchmarks, template=args.template, k=args.k, temperature=args.temperature,
            greedy=args.greedy, max_new_tokens=args.max_new_tokens, limit=args.limit, ids=args.ids,
            output_dir=str(output_dir), backend=args.backend, batch_size=args.batch_size, seed=args.seed,
            data_dir=args.data_dir, progress=args.progress, verifier_timeout=args.verifier_timeout, dtype=args.dtype,
            answer_format=args.answer_format, experiences=bank, retrieve=args.retrieve or DEFAULT_RETRIEVE,
        )
    except KeyboardInterrupt:
        print(f"\nmelrl eval: interrupted; rerun the same command to continue from {output_dir}", file=sys.stderr)
        return 130
    print(results_markdown(results))
    print(f"samples, results.json and results.md in {output_dir}")
    return 0


def check_eval_inputs(args: argparse.Namespace) -> None:
    """The settings and every benchmark's file (downloaded when missing), before a model loads."""
    from melrl.cli.main import ConfigError
    from melrl.data import ensure_dataset
    from melrl.evaluation.runner import SPLITS, Settings

    try:
        Settings(args.template, args.k, args.temperature, args.greedy, args.max_new_tokens, args.seed,
                 args.verifier_timeout, args.answer_format).check()
    except ValueError as error:
        raise ConfigError(str(error)) from error
    names = [b.strip() for b in args.benchmarks.split(",")]
    if not all(names):
        raise ConfigError(f"--benchmarks {args.benchmarks!r} has an empty name")
    for name in dict.fromkeys(names):
        ensure_dataset(name, SPLITS.get(name), data_dir=args.data_dir)


def _run_compare(dirs: list[str], output_dir: str | None) -> int:
    from melrl.evaluation.tables import compare

    table = compare(dirs)
    print(table)
    if output_dir:
        path = Path(output_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "comparison.md").write_text(table, encoding="utf-8")
        print(f"written to {path / 'comparison.md'}")
    return 0
