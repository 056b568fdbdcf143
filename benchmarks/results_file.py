"""Where a benchmark leaves its numbers: a JSON file and, beside it, the PNG its `plot` draws from them."""

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
