"""Run reports: one self-contained HTML page per set of run directories, with figures also saved as PNG files.

```python
from melrl.report import build_report
build_report(["runs/grpo", "runs/mel"], "report.html")   # also writes report_files/*.png
```

`run_data` reads run directories (no heavy imports), `figures` draws with matplotlib (Agg), `page` writes the HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from melrl.report.run_data import (
    COUNTERS,
    VERDICTS,
    EvalResult,
    Run,
    filter_experiences,
    first_heuristic,
    load_run,
    load_runs,
    verdict,
)

__all__ = [
    "COUNTERS",
    "VERDICTS",
    "EvalResult",
    "Report",
    "Run",
    "build_report",
    "filter_experiences",
    "first_heuristic",
    "load_run",
    "load_runs",
    "verdict",
]


@dataclass
class Report:
    html_path: Path
    files_dir: Path
    runs: list[Run]
    figures: list[str] = field(default_factory=list)  # names of the figures drawn (PNG files in files_dir)
    omitted: list[str] = field(default_factory=list)  # notes of the figures left out
    entries: int = 0  # meta-experiences in the browser


def build_report(
    run_dirs: list[str | Path],
    output: str | Path = "report.html",
    *,
    title: str | None = None,
    max_experiences: int = 1000,
    max_chars: int = 3000,
) -> Report:
    """Write `output` (HTML, figures embedded) and `<output stem>_files/<figure>.png`; return what was written.

    `max_experiences` caps the browser's entries per run (every k-th is shown beyond it; 0 = no cap);
    `max_chars` caps each text shown (head and tail kept).
    """
    from melrl.report.figures import all_figures
    from melrl.report.page import render_page

    output = Path(output)
    runs = load_runs(list(run_dirs))
    figures = all_figures(runs)
    files_dir = output.parent / f"{output.stem}_files"
    drawn = [f for f in figures if f.png is not None]
    if drawn:
        files_dir.mkdir(parents=True, exist_ok=True)
        for fig in drawn:
            (files_dir / f"{fig.name}.png").write_bytes(fig.png)
    page = render_page(runs, figures, title=title, files_dir=files_dir.name if drawn else None,
                       max_experiences=max_experiences, max_chars=max_chars)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(page, encoding="utf-8", errors="backslashreplace")
    tmp.replace(output)
    entries = page.count('<details class="experience"')
    return Report(html_path=output, files_dir=files_dir, runs=runs, figures=[f.name for f in drawn],
                  omitted=[f.note for f in figures if f.png is None and f.note], entries=entries)
