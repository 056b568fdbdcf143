"""A plain-text summary of a run directory (`metrics.jsonl`, `experiences.jsonl`), printed after `melrl demo`."""

from __future__ import annotations

import textwrap
from pathlib import Path

from melrl.method.retention import retention_ratio
from melrl.jsonl import read_jsonl

COUNTERS = ("pairs", "constructed", "parsed", "leaked", "kept")


def pick_sample(experiences: list[dict]) -> dict | None:
    """The most informative meta-experience to show: a kept one, else a parsed one, else the first."""
    for wanted in ("kept", "parsed"):
        for record in experiences:
            if record.get(wanted):
                return record
    return experiences[0] if experiences else None


def shown_analysis(record: dict, limit: int = 1500) -> str:
    """A kept meta-experience whole; any other cut at `limit` characters."""
    text = record["analysis"].strip()
    if record.get("kept") or len(text) <= limit:
        return text
    return text[:limit] + f" [... {len(text) - limit} more characters]"


def run_summary(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    metrics = [m for m in read_jsonl(run_dir / "metrics.jsonl") if "reward_mean" in m]  # training lines
    experiences = read_jsonl(run_dir / "experiences.jsonl") if (run_dir / "experiences.jsonl").exists() else []
    lines = [f"Run {run_dir}: {len(metrics)} steps", ""]
    lines.append("step  reward  mixed  " + "  ".join(f"{c:>11}" for c in COUNTERS) + "   retention   nll     seconds")
    for m in metrics:
        seconds = sum(v for k, v in m.items() if k.startswith("time_") and k != "time_nll")
        nll = f"{m['nll']:.3f}" if m.get("nll") is not None else "   - "
        lines.append(
            f"{m['step']:>4}  {m['reward_mean']:.3f}  {m['mixed_group_fraction']:.2f}   "
            + "  ".join(f"{m.get(c, 0):>11}" for c in COUNTERS)
            + f"   {m['retention_ratio']:.2f}        {nll}   {seconds:6.1f}"
        )
    totals = {c: sum(m.get(c, 0) for m in metrics) for c in COUNTERS}
    lines += [
        "",
        "Total: " + ", ".join(f"{c} {totals[c]}" for c in COUNTERS)
        + f"; retention ratio {retention_ratio(totals['kept'], totals['constructed']):.2f}",
    ]
    sample = pick_sample(experiences)
    if sample is not None:
        verdict = "kept" if sample.get("kept") else ("parsed, not kept" if sample.get("parsed") else "rejected")
        reason = f" ({sample['parse_error']})" if sample.get("parse_error") else ""
        lines += [
            "",
            f"Sample meta-experience (step {sample['step']}, problem {sample['problem_id']}, {verdict}{reason}):",
            textwrap.indent(textwrap.shorten(sample["problem"], 300), "  problem: "),
            textwrap.indent(shown_analysis(sample) or "(empty)", "  | "),
        ]
        if sample.get("replayed"):
            answers = ", ".join(f"{answer} ({'correct' if ok else 'wrong'})" for answer, ok in
                                zip(sample.get("replay_answer") or [], sample.get("replay_correct") or []))
            lines.append(f"  replay with it in context: {answers or 'no answer'}; gold {sample['gold']}")
    lines.append(f"\nFiles: {run_dir / 'metrics.jsonl'}, {run_dir / 'experiences.jsonl'}")
    return "\n".join(lines)


def print_run_summary(run_dir: str | Path) -> None:
    print(run_summary(run_dir), flush=True)
