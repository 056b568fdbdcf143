"""`melrl report` and `melrl experiences`: the run report page and the meta-experience bank in the terminal.

Light at import (argparse only); matplotlib is imported when a report is drawn.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import unicodedata
from pathlib import Path


def add_report_parsers(subparsers) -> None:
    """Register the `report` and `experiences` subcommands on `melrl`'s subparsers."""
    from melrl.report.run_data import VERDICTS

    report = subparsers.add_parser(
        "report", help="an HTML page of one or more runs: curves, counters, timings, evaluation, meta-experiences",
        description="Write one self-contained HTML page (figures embedded; also saved as PNG files in "
                    "<output stem>_files/) about one or more run directories, overlaid in every figure.",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (training --output_dir)")
    report.add_argument("--output", "-o", default=None,
                        help="HTML file (default: RUN_DIR/report.html for one run, ./report.html for several)")
    report.add_argument("--title", default=None, help="page title")
    report.add_argument("--max-experiences", type=int, default=1000,
                        help="most meta-experiences per run in the browser; beyond, every k-th (0: all; default 1000)")
    report.add_argument("--max-chars", type=int, default=3000,
                        help="longest text shown per field; longer ones keep head and tail (default 3000)")

    experiences = subparsers.add_parser(
        "experiences", help="list and export a run's meta-experience bank",
        description="Print a table of a run's meta-experiences (step, problem id, verdict, first heuristic or "
                    "rejection reason) and optionally export the filtered records as JSON lines.",
    )
    experiences.add_argument("run_dir", metavar="RUN_DIR")
    experiences.add_argument("--kept", action="store_true", help="only the kept (internalized) ones")
    experiences.add_argument("--step", type=int, default=None, help="only this step")
    experiences.add_argument("--verdict", choices=[*VERDICTS, "rejected"], default=None,
                             help="only this verdict (rejected: every one but kept)")
    experiences.add_argument("--problem", default=None, help="problem id, or text the problem contains")
    experiences.add_argument("--limit", type=int, default=None, help="print at most N rows (the export has all)")
    experiences.add_argument("--export", metavar="FILE.jsonl", default=None,
                             help="write the filtered records, whole, as JSON lines ('-': standard output)")
    experiences.add_argument("--quiet", "-q", action="store_true", help="no table (with --export)")


def _error(message: str) -> int:
    print(f"melrl: error: {message}", file=sys.stderr)
    return 2


def run_report(args: argparse.Namespace) -> int:
    from melrl.report import build_report

    missing = [d for d in args.run_dirs if not Path(d).is_dir()]
    if missing:
        return _error("no such run directory: " + ", ".join(missing))
    output = Path(args.output) if args.output else (
        Path(args.run_dirs[0]) / "report.html" if len(args.run_dirs) == 1 else Path("report.html"))
    report = build_report(args.run_dirs, output, title=args.title, max_experiences=args.max_experiences,
                          max_chars=args.max_chars)
    for run in report.runs:
        for note in run.notes:
            print(f"note: {run.label}: {note}", file=sys.stderr)
    for note in report.omitted:
        print(f"note: {note}", file=sys.stderr)
    pngs = f"; PNG files in {report.files_dir}" if report.figures else ""
    print(f"wrote {report.html_path}: {len(report.figures)} figures ({', '.join(report.figures) or 'none'}), "
          f"{report.entries} meta-experiences{pngs}")
    return 0


def _clean(text: str) -> str:
    """One line without control characters: model output must not drive the terminal."""
    text = " ".join(str(text).split())
    return "".join(c if unicodedata.category(c)[0] != "C" else "?" for c in text)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def format_table(records: list[dict], width: int | None = None) -> str:
    from melrl.report.run_data import first_heuristic, verdict

    width = width or shutil.get_terminal_size((120, 24)).columns
    ids = [_clean(r.get("problem_id", "")) for r in records]
    id_width = min(max([len("problem")] + [len(i) for i in ids]), 24)
    header = f"{'step':>6}  {'problem':<{id_width}}  {'verdict':<14}  heuristic / reason"
    lines = [header]
    rest = max(width - len(header) + len("heuristic / reason"), 20)
    for record, problem_id in zip(records, ids):
        v = verdict(record)
        text = first_heuristic(record)
        if not text:
            reason = record.get("parse_error") or (
                "leaks " + ", ".join(map(str, record.get("leaks") or [])) if v == "leaked" else "")
            text = f"({reason})" if reason else ""
        step = record.get("step", "")
        lines.append(f"{_clean(step):>6}  {_shorten(problem_id, id_width):<{id_width}}  {v:<14}  "
                     f"{_shorten(_clean(text), rest)}")
    return "\n".join(lines)


def run_experiences(args: argparse.Namespace) -> int:
    from melrl.jsonl import read_jsonl
    from melrl.report.run_data import EXPERIENCES_FILE, filter_experiences, verdict

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        return _error(f"no such run directory: {run_dir}")
    path = run_dir / EXPERIENCES_FILE
    if not path.is_file():
        return _error(f"no {EXPERIENCES_FILE} in {run_dir} (a run with meta_experience: false writes none)")
    records = read_jsonl(path)
    chosen = filter_experiences(records, kept=args.kept, step=args.step,
                                verdicts={args.verdict} if args.verdict else None, problem=args.problem)
    to_stdout = args.export == "-"
    if not args.quiet and not to_stdout:
        shown = chosen if args.limit is None else chosen[: args.limit]
        print(format_table(shown))
        kept = sum(verdict(r) == "kept" for r in chosen)
        more = f", first {len(shown)} printed" if len(shown) < len(chosen) else ""
        print(f"{len(chosen)} of {len(records)} meta-experiences ({kept} kept){more}")
    if args.export:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen)
        if to_stdout:
            sys.stdout.write(lines)
        else:
            export = Path(args.export)
            export.parent.mkdir(parents=True, exist_ok=True)
            export.write_bytes(lines.encode("utf-8", errors="backslashreplace"))
            print(f"exported {len(chosen)} to {export}", file=sys.stderr if args.quiet else sys.stdout)
    return 0
