"""Where a benchmark leaves its numbers: a JSON file with the provenance of the run (git revision, CPU, package
versions) and, beside it, the PNG its `plot` draws from the numbers."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "accelerate", "peft", "math-verify", "vllm", "deepspeed")


def provenance() -> dict:
    """What produced a result: the code's revision (and whether it had uncommitted changes), the machine, the
    versions of the packages melrl builds on, and the torch thread count."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    import torch

    return {
        "git_revision": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "packages": versions,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_results(results: dict, output: str | Path, plot: Callable[[dict, Path], None] | None = None) -> None:
    """`{"provenance": ..., "results": results}` to `output`, and `plot(results, output.png)` beside it."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"provenance": provenance(), "results": results}, indent=2) + "\n")
    if plot is not None:
        plot(results, output.with_suffix(".png"))
    print(f"saved {output}" + (f" and {output.with_suffix('.png')}" if plot is not None else ""))
