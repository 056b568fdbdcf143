"""Run directories: which checkpoint to resume from, and run files made consistent with it."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from melrl.jsonl import truncate_after_step

logger = logging.getLogger("melrl.training.resume")

EXPERIENCES_FILE = "experiences.jsonl"
METRICS_FILE = "metrics.jsonl"
COMPLETE_MARKER = "melrl_complete.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (a checkpoint is finished once its marker exists)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), path)
        for path in run_dir.iterdir()
        if (m := _CHECKPOINT.match(path.name)) and (path / COMPLETE_MARKER).exists()
    ]
    return [path for _, path in sorted(found)]


def resolve_checkpoint(run_dir: str | Path, requested: str | bool | None) -> str | None:
    """The checkpoint to resume from: an explicit folder, or the last finished one of `run_dir` for True/"last"."""
    if requested in (None, False, ""):
        return None
    if requested is True or requested == "last":
        finished = complete_checkpoints(run_dir)
        if not finished:
            raise FileNotFoundError(f"--resume: {run_dir} has no finished checkpoint to resume from")
        return str(finished[-1])
    path = Path(str(requested))
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"--resume: {path} is not a checkpoint folder (no trainer_state.json)")
    return str(path)


def checkpoint_step(checkpoint: str | Path) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def rewind_run_files(run_dir: str | Path, step: int) -> dict[str, int]:
    """Drop the run-file lines written after `step`, so a resumed run writes them once, not twice."""
    removed = {name: truncate_after_step(Path(run_dir) / name, step) for name in (EXPERIENCES_FILE, METRICS_FILE)}
    if any(removed.values()):
        logger.warning("resuming at step %d: dropped %s run-file lines written after it", step, removed)
    return removed
