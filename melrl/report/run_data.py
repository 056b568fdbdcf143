"""Reading a run directory for reports: training and validation metrics, the meta-experience bank, evaluations.

Pure Python (no matplotlib, no torch). Missing or damaged files never raise: they become `Run.notes`, which the
page and the command line show.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from melrl.jsonl import read_jsonl

METRICS_FILE = "metrics.jsonl"
EXPERIENCES_FILE = "experiences.jsonl"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"

COUNTERS = ("pairs", "constructed", "parsed", "leaked", "kept")
ALL_COUNTERS = ("pairs", "constructed", "truncated", "parsed", "leaked", "replayed", "kept")
PHASES = ("rollout", "scoring", "analysis", "replay", "update")

# One label per meta-experience, in the order they are checked (the first that applies).
VERDICTS = ("kept", "truncated", "rejected-parse", "leaked", "replay-failed")
VERDICT_HELP = {
    "kept": "replay verified: internalized",
    "truncated": "the analysis hit its token budget and was not replayed (experience_filter: format)",
    "rejected-parse": "the analysis lacks a required part (or is empty) and was not replayed",
    "leaked": "heuristics or summary quote the answer or the problem's distinctive numbers",
    "replay-failed": "the replay with the meta-experience in context did not verify",
}


def verdict(record: dict) -> str:
    """The fate of one meta-experience: one of `VERDICTS`."""
    if record.get("kept"):
        return "kept"
    if record.get("leaked") or record.get("leaks"):
        return "leaked"
    if record.get("replayed", bool(record.get("replay") or record.get("replay_correct"))):
        return "replay-failed"
    if record.get("truncated"):
        return "truncated"
    return "rejected-parse"


def first_heuristic(record: dict) -> str:
    """The first line of the first heuristic, '' when there is none."""
    parts = record.get("parts") or {}
    heuristics = parts.get("heuristics") if isinstance(parts, dict) else None
    if not isinstance(heuristics, (list, tuple)):
        heuristics = [] if heuristics is None else [heuristics]
    for h in heuristics:
        text = str(h).strip()
        if text:
            return text.splitlines()[0].strip()
    return ""


def filter_experiences(
    records: list[dict],
    *,
    kept: bool = False,
    step: int | None = None,
    step_min: int | None = None,
    step_max: int | None = None,
    verdicts: set[str] | None = None,
    problem: str | None = None,
) -> list[dict]:
    """The records that pass every given filter. `problem` matches the problem id exactly or a substring of the
    problem text (case-insensitive); `verdicts` is a set of `VERDICTS` names ("rejected" = every one but kept)."""
    wanted = set(verdicts or ())
    if "rejected" in wanted:
        wanted |= set(VERDICTS) - {"kept"}
    needle = problem.lower() if problem else None
    out = []
    for r in records:
        s = _number(r.get("step"))
        if kept and not r.get("kept"):
            continue
        if step is not None and s != step:
            continue
        if step_min is not None and (s is None or s < step_min):
            continue
        if step_max is not None and (s is None or s > step_max):
            continue
        if wanted and verdict(r) not in wanted:
            continue
        if needle is not None and not (
            str(r.get("problem_id", "")).lower() == needle or needle in str(r.get("problem", "")).lower()
        ):
            continue
        out.append(r)
    return out


@dataclass
class EvalResult:
    """The evaluation output found in one folder (`results.json` and/or `results.md`)."""

    folder: Path
    name: str  # "" for the run directory itself, else the eval subfolder's name
    config: dict | None = None
    metrics: dict | None = None  # benchmark -> {metric: value}
    markdown: str | None = None
    error: str | None = None


@dataclass
class Run:
    path: Path
    label: str
    train: list[dict] = field(default_factory=list)  # training lines, one per step (the last for a step)
    validation: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # "eval/b/m" -> (step, value)
    experiences: list[dict] | None = None  # None: no experiences.jsonl
    evals: list[EvalResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is missing or damaged

    @property
    def has_metrics(self) -> bool:
        return bool(self.train)

    @property
    def is_mel(self) -> bool:
        """Did the meta-experience loop run (any pair or constructed meta-experience)?"""
        return any(m.get("pairs") or m.get("constructed") for m in self.train) or bool(self.experiences)

    def steps(self) -> list[float]:
        return [m["step"] for m in self.train]

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of a training key, skipping lines without a number for it."""
        xs, ys = [], []
        for m in self.train:
            v = _number(m.get(key))
            if v is not None:
                xs.append(m["step"])
                ys.append(v)
        return xs, ys

    def total(self, key: str) -> int:
        return int(sum(_number(m.get(key)) or 0 for m in self.train))

    def benchmarks(self) -> dict[str, dict[str, list[tuple[float, float]]]]:
        """benchmark -> metric -> [(step, value)], from the `eval/{benchmark}/{metric}` keys."""
        out: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for key, points in self.validation.items():
            bench, metric = split_eval_key(key)
            out.setdefault(bench, {})[metric] = points
        return out


def split_eval_key(key: str) -> tuple[str, str]:
    """"eval/gsm8k/pass@1" -> ("gsm8k", "pass@1"); "eval/acc" -> ("acc", "value")."""
    rest = key[len("eval/"):] if key.startswith("eval/") else key
    if "/" in rest:
        bench, metric = rest.rsplit("/", 1)
        return bench, metric
    return rest, "value"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def _read(path: Path, notes: list[str]) -> list[dict] | None:
    """Records of a JSON-lines file, None when it does not exist; unreadable lines become a note."""
    if not path.is_file():
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            records = read_jsonl(path)
        except OSError as error:
            notes.append(f"{path.name}: cannot be read ({error})")
            return None
    notes.extend(str(w.message) for w in caught)
    return records


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Everything a report shows about one run directory; never raises for missing or damaged files."""
    path = Path(path)
    run = Run(path=path, label=label or run_label(path))
    if not path.is_dir():
        run.notes.append(f"{path}: no such directory")
        return run

    metrics = _read(path / METRICS_FILE, run.notes)
    if metrics is None:
        run.notes.append(f"no {METRICS_FILE} (training curves, counters and timings are omitted)")
        metrics = []
    by_step: dict[float, dict] = {}
    validation: dict[str, dict[float, float]] = {}
    no_step = 0
    for line in metrics:
        step = _number(line.get("step"))
        if step is None:
            no_step += 1
            continue
        for key, value in line.items():
            if key.startswith("eval/") and _number(value) is not None:
                validation.setdefault(key, {})[step] = value
        if any(not k.startswith("eval/") and k != "step" for k in line):
            by_step[step] = line  # a step logged twice (a resumed run): the last line wins
    if no_step:
        run.notes.append(f"{METRICS_FILE}: {no_step} line(s) without a numeric step were ignored")
    run.train = [by_step[s] for s in sorted(by_step)]
    run.validation = {key: sorted(points.items()) for key, points in sorted(validation.items())}

    run.experiences = _read(path / EXPERIENCES_FILE, run.notes)
    if run.experiences is None and run.is_mel:
        run.notes.append(f"no {EXPERIENCES_FILE} although the run constructed meta-experiences")

    run.evals = find_evaluations(path)
    for result in run.evals:
        if result.error:
            run.notes.append(result.error)
    return run


def find_evaluations(run_dir: Path) -> list[EvalResult]:
    """Evaluation outputs in `RUN_DIR/` and `RUN_DIR/eval/*/`."""
    folders = [(run_dir, "")]
    eval_root = run_dir / "eval"
    if eval_root.is_dir():
        folders += [(f, f.name) for f in sorted(eval_root.iterdir()) if f.is_dir()]
    found = []
    for folder, name in folders:
        json_path, md_path = folder / RESULTS_JSON, folder / RESULTS_MD
        if not (json_path.is_file() or md_path.is_file()):
            continue
        result = EvalResult(folder=folder, name=name)
        shown = json_path.relative_to(run_dir) if json_path.is_relative_to(run_dir) else json_path
        if json_path.is_file():
            try:
                data = json.loads(json_path.read_text(encoding="utf-8", errors="replace"))
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                config = data.get("config")
                result.config = config if isinstance(config, dict) else None
                metrics = data.get("metrics")
                if isinstance(metrics, dict):
                    result.metrics = {str(b): m for b, m in metrics.items() if isinstance(m, dict)}
                else:
                    result.error = f"{shown}: no \"metrics\" object"
            except (OSError, ValueError) as error:
                result.error = f"{shown}: unreadable ({error})"
        if md_path.is_file():
            try:
                result.markdown = md_path.read_text(encoding="utf-8", errors="replace")
            except OSError as error:
                result.error = f"{md_path.name}: unreadable ({error})"
        found.append(result)
    return found


def run_label(path: Path) -> str:
    return path.name or path.resolve().name or str(path)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Runs labelled by directory name; equal names get their parent's name, then a number, to tell them apart."""
    paths = [Path(p) for p in paths]
    labels = [run_label(p) for p in paths]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            parent = paths[i].resolve().parent.name
            labels[i] = f"{parent}/{label}" if parent else label
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            labels[i] = f"{label} #{seen[label]}"
    return [load_run(p, label) for p, label in zip(paths, labels)]
