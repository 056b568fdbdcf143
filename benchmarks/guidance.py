"""Retention with and without grammar-guided analyses (`analysis_guidance: none` against `sections`).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/guidance.py                 # N = 6 pairs, the demo's settings
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/guidance.py --pairs 6 --analysis-prompt compact

On the embedded model (SmolLM2-135M-Instruct) with the CPU demo's settings (`melrl/configs/demo.yaml`: arith level
1, the `short` template, G = 4, temperature 0.7, the paper's analysis prompt, 192 analysis tokens, its replay
samples, threshold and budget), rollouts are
sampled once until N groups are mixed (one contrastive pair each). Then the same N pairs go through
`MELTrainer._meta_experience_phase` twice, from the same seed: analysis, parsing, leak check, replay, verdicts, with
`analysis_guidance` `none` (the paper's) and `sections` (ours). Per arm: constructed, truncated, parsed, placeholder
copies (analyses with a section that only repeats the prompt's placeholder text, `template_copies`), leaked,
replayed, kept, retention (kept / constructed), analysis tokens and the analysis phase's seconds. The grammar's
one-off compilation is timed apart (`grammar_compile_seconds`). Results go to `benchmarks/results/guidance.json`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml
from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "melrl" / "configs" / "demo.yaml"
# The demo's settings that shape rollouts and analyses (the rest of demo.yaml is about the update).
DEMO_KEYS = ("prompt_template", "num_generations", "max_completion_length", "temperature", "max_pairs_per_prompt",
             "analysis_max_new_tokens", "analysis_max_prompt_length", "replay_samples", "replay_threshold",
             "replay_max_new_tokens", "experience_filter", "leak_check", "seed")


def sample_mixed_groups(trainer, records, pairs: int, group: int, answer_format: str, timeout: float):
    """Rollouts of the problems in order, `group` per problem, until `pairs` groups hold both a correct and an
    incorrect answer; the mixed groups only, as `Rollouts`."""
    import torch

    from melrl.method.prompts import render, solve_text
    from melrl.training.generation import Rollouts
    from melrl.verify.verifier import verify_batch

    tokenizer = trainer.processing_class
    template = trainer.args.prompt_template
    kept = {"problems": [], "golds": [], "ids": [], "completion_ids": [], "correct": []}
    sampled = 0
    for start in range(0, len(records), 8):
        chunk = records[start : start + 8]
        prompts = [render(tokenizer, solve_text(r.problem, template)) for r in chunk for _ in range(group)]
        prompt_ids, _, _ = trainer._tokenize_prompts(prompts)
        completions, _ = trainer._generate_single_turn(list(prompt_ids), None, {}, 1)
        texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
        verdicts = verify_batch(texts, [r.answer for r in chunk for _ in range(group)], answer_format=answer_format,
                                timeout=timeout)
        sampled += len(chunk)
        for i, record in enumerate(chunk):
            rows = range(i * group, (i + 1) * group)
            correct = [bool(verdicts[r]) for r in rows]
            if 0 < sum(correct) < group and len(kept["problems"]) < pairs * group:
                kept["problems"] += [record.problem] * group
                kept["golds"] += [str(record.answer)] * group
                kept["ids"] += [record.id] * group
                kept["completion_ids"] += [list(completions[r]) for r in rows]
                kept["correct"] += correct
        if len(kept["problems"]) >= pairs * group:
            break
    rewards = torch.tensor([[float(c)] for c in kept["correct"]])
    return Rollouts(rewards=rewards, **kept), sampled


def run_arm(trainer, rollouts, guidance: str, seed: int) -> dict:
    """One pass of the meta-experience phase over `rollouts` with `analysis_guidance = guidance`."""
    import torch

    from melrl.jsonl import read_jsonl
    from melrl.method.parsing import template_copies
    from melrl.training.run_files import StepStats

    trainer.args.analysis_guidance = guidance
    trainer.run_files.stats = StepStats(trainer.run_files.sync)
    log = Path(trainer.args.output_dir) / "experiences.jsonl"
    before = len(read_jsonl(log)) if log.exists() else 0
    torch.manual_seed(seed)
    start = time.perf_counter()
    trainer._meta_experience_phase(rollouts)
    wall = time.perf_counter() - start
    records = read_jsonl(log)[before:]
    stats = trainer.stats
    count = lambda key: int(stats.counts.get(key, 0))  # noqa: E731
    constructed = count("constructed")
    copies = [template_copies(r["analysis"]) for r in records]
    return {
        "constructed": constructed,
        "truncated": count("truncated"),
        "parsed": count("parsed"),
        "placeholder_copies": sum(bool(c) for c in copies),
        "placeholder_copied_sections": sum(len(c) for c in copies),
        "leaked": count("leaked"),
        "replayed": count("replayed"),
        "kept": count("kept"),
        "retention": count("kept") / constructed if constructed else 0.0,
        "parse_rate": count("parsed") / constructed if constructed else 0.0,
        "analysis_tokens_mean": count("analysis_tokens") / max(constructed, 1),
        "analysis_seconds": round(stats.time["analysis"], 2),
        "replay_seconds": round(stats.time["replay"], 2),
        "phase_seconds": round(wall, 2),
        "examples": [{"analysis": r["analysis"], "parsed": r["parsed"], "parse_error": r["parse_error"],
                      "kept": r["kept"]} for r in records[:3]],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("constructed", "truncated", "parsed", "placeholder_copies", "replayed", "kept")
    arms = list(results["arms"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        ax.bar([i + j * width for i in range(len(keys))], [results["arms"][arm][k] for k in keys], width,
               label=f"{arm} ({results['arms'][arm]['analysis_seconds']:.0f} s analysis)")
    ax.set_xticks([i + width * (len(arms) - 1) / 2 for i in range(len(keys))], keys, fontsize=8)
    ax.set_ylabel("meta-experiences")
    ax.set_title(f"analysis_guidance, {results['pairs']} pairs, {results['settings']['analysis_prompt']} prompt",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=6, help="contrastive pairs (one per mixed group)")
    parser.add_argument("--analysis-prompt", default="paper", choices=["paper", "compact"])
    parser.add_argument("--analysis-max-new-tokens", type=int, default=None, help="default: the demo's")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "guidance.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from melrl.data import load_records
    from melrl.method.prompts import ANSWER_FORMAT
    from melrl.models import load_model_and_tokenizer
    from melrl.training.config import MELConfig
    from melrl.training.generation import analysis_guidance
    from melrl.cli.train import build_train_dataset
    from melrl.training.trainer import MELTrainer

    demo = yaml.safe_load(DEMO.read_text())
    settings = {key: demo[key] for key in DEMO_KEYS if key in demo} | {"analysis_prompt": args.analysis_prompt}
    if args.analysis_max_new_tokens:
        settings["analysis_max_new_tokens"] = args.analysis_max_new_tokens
    records = load_records("arith", n=256, level=demo.get("arith_level", 1), seed=settings["seed"])
    model, tokenizer = load_model_and_tokenizer(demo["model_name_or_path"])
    with tempfile.TemporaryDirectory(prefix="melrl-guidance-") as work:
        config = MELConfig(output_dir=work, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                           per_device_train_batch_size=settings["num_generations"], disable_tqdm=True,
                           analysis_guidance="sections", **settings)
        trainer = MELTrainer(model=model, args=config, processing_class=tokenizer,
                             train_dataset=build_train_dataset(records[:8], tokenizer, settings["prompt_template"]))
        trainer.model.eval()  # no dropout in generation (SmolLM2 has none; a model with some would differ per arm)
        start = time.perf_counter()
        rollouts, sampled = sample_mixed_groups(trainer, records, args.pairs, settings["num_generations"],
                                                ANSWER_FORMAT[settings["prompt_template"]], config.verifier_timeout)
        rollout_seconds = time.perf_counter() - start
        start = time.perf_counter()
        guidance = analysis_guidance(trainer)
        guidance.compiled(trainer._tokenizer, vocab_size=trainer.model.config.vocab_size,
                          stop_token_ids=trainer.eos_token_ids)
        compile_seconds = time.perf_counter() - start
        pairs = len(rollouts.problems) // settings["num_generations"]
        print(f"{pairs} mixed groups from {sampled} problems in {rollout_seconds:.0f} s; grammar compiled in "
              f"{compile_seconds:.1f} s", flush=True)
        arms = {}
        for arm in ("none", "sections"):
            arms[arm] = run_arm(trainer, rollouts, arm, settings["seed"])
            summary = {k: v for k, v in arms[arm].items() if k != "examples"}
            print(arm, summary, flush=True)
    results = {
        "model": demo["model_name_or_path"],
        "pairs": pairs,
        "problems_sampled": sampled,
        "settings": settings,
        "section_chars": guidance.max_section_chars,
        "regex": guidance.regex,
        "rollout_seconds": round(rollout_seconds, 1),
        "grammar_compile_seconds": round(compile_seconds, 2),
        "arms": arms,
    }
    save_results(results, args.output, plot)


if __name__ == "__main__":
    main()
