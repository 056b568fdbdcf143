"""Where a benchmark leaves its numbers: a JSON file and, beside it, the PNG its `plot` draws from them; and the
chart of two ways of making the same calls that several benchmarks draw."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def save_results(results: dict, output: str | Path, plot: Callable[[dict, Path], None]) -> None:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    plot(results, output.with_suffix(".png"))
    print(f"saved {output} and {output.with_suffix('.png')}")


def plot_two_ways(results: dict, path: Path, ways: tuple[str, str], value: str, ticks: list[str], ylabel: str,
                  xlabel: str | None = None) -> None:
    """One pair of bars per call in `results["calls"]`: `value` of each of the two `ways` of making it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = results["calls"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    for offset, way in zip((-width / 2, width / 2), ways):
        ax.bar([i + offset for i in range(len(calls))], [call[way][value] for call in calls.values()], width,
               label=way)
    ax.set_xticks(range(len(calls)), ticks)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{results['model']} on {results['threads']} CPU threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
