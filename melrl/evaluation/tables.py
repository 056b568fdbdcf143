"""Markdown tables in the layout of the paper's Table 1: a row per run, Pass@1 | Avg@k | Pass@k per benchmark,
then the average over benchmarks. Values are percentages with two decimals."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

DISPLAY_NAMES = {
    "aime24": "AIME 2024",
    "aime25": "AIME 2025",
    "amc23": "AMC 2023",
    "math500": "MATH 500",
    "olympiadbench": "OlympiadBench",
    "gsm8k": "GSM8K",
    "minerva_math": "Minerva-Math",
    "arith": "Arith",
    "average": "Average",
}
RESULTS_FILE = "results.json"


def metric_label(metric: str) -> str:
    """"pass@1" → "Pass@1", "avg@8" → "Avg@8"."""
    return metric[:1].upper() + metric[1:]


def markdown_table(rows: Sequence[tuple[str, Mapping[str, Mapping[str, float]]]]) -> str:
    """One table for several runs: `rows` are (label, metrics per benchmark incl. "average"); missing cells "–"."""
    columns: list[tuple[str, str]] = []
    for _, metrics in rows:
        for bench in [b for b in metrics if b != "average"] + (["average"] if "average" in metrics else []):
            columns += [(bench, m) for m in metrics[bench] if (bench, m) not in columns]
    average = [c for c in columns if c[0] == "average"]
    columns = [c for c in columns if c[0] != "average"] + average
    header = ["Run"] + [f"{DISPLAY_NAMES.get(b, b)} {metric_label(m)}" for b, m in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * len(columns)]
    for label, metrics in rows:
        cells = [_percent(metrics.get(b, {}).get(m)) for b, m in columns]
        lines.append("| " + " | ".join([label.replace("|", "\\|"), *cells]) + " |")
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping) -> str:
    """results.md: the table with this run's row, then the settings and problem counts it rests on."""
    config = results["config"]
    notes = []
    if config["greedy"]:
        notes.append("Pass@1: one greedy sample (T = 0)")
    if config["k"]:
        notes.append(f"Avg@{config['k']} and Pass@{config['k']}: {config['k']} samples at T = {config['temperature']}")
    counts = ", ".join(f"{DISPLAY_NAMES.get(b, b)} {c['problems']}" for b, c in results["counts"].items())
    formats = config.get("answer_formats") or {}
    read = ", ".join(f"{DISPLAY_NAMES.get(b, b)} `{f}`" for b, f in formats.items())
    bank = config.get("experiences")
    label = config["model"] + (f" + bank (K = {bank['retrieve']})" if bank else "")
    return (
        f"# Evaluation of {label}\n\n{markdown_table([(label, results['metrics'])])}\n"
        f"{'; '.join(notes)}; accuracy in %. Template `{config['template']}`, max_new_tokens "
        f"{config['max_new_tokens']}, seed {config['seed']}, back end {config['backend']}.\n\nProblems: {counts}.\n"
        + (f"\nAnswers read as: {read}.\n" if read else "") + (_bank_note(bank) if bank else "")
    )


def _bank_note(bank: Mapping) -> str:
    excluded = bank.get("exclusions") or {}
    return (
        f"\nExperience bank (in context; not in the paper): the {bank['retrieve']} most relevant of the "
        f"{bank['kept']} kept meta-experiences in `{bank['path']}` (sha256 {bank['sha256'][:12]}), retrieved with "
        f"{bank['retriever']} over problem + heuristics, in the Empirical Validation Prompt. Entries of the "
        f"evaluated problem itself left out: {excluded.get('entries', 0)}, for {excluded.get('problems', 0)} "
        "problem(s).\n"
    )


def arm_label(directory: str, config: Mapping) -> str:
    """A --compare row's label: the directory, and the bank and K when the run had one in context."""
    bank = config.get("experiences")
    return f"{directory} (+ bank {bank['path']}, K = {bank['retrieve']})" if bank else directory


def compare(dirs: Sequence[str | os.PathLike]) -> str:
    """A table with one row per evaluation directory (read from its results.json), labelled by the directory and,
    for a run with an experience bank in context, the bank and K."""
    rows = []
    for d in dirs:
        path = Path(d) / RESULTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {d} a finished `melrl eval` output directory?")
        results = json.loads(path.read_text(encoding="utf-8"))
        rows.append((arm_label(str(d), results.get("config") or {}), results["metrics"]))
    return markdown_table(rows)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"
