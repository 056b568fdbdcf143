"""A run's files and its step accounting, as trainer callbacks.

- `metrics.jsonl`: one line per optimizer step (counters, token counts, phase times, the NLL);
- `experiences.jsonl`: one line per meta-experience constructed;
- `melrl_complete.json` in each checkpoint folder, written once the checkpoint is saved whole, so that a resumed
  run never starts from a checkpoint that a crash left half-written (`melrl.training.resume`).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from melrl.jsonl import JsonlWriter
from melrl.method.retention import retention_ratio
from melrl.training.resume import COMPLETE_MARKER, EXPERIENCES_FILE, METRICS_FILE

GENERATION_PHASES = ("rollout", "scoring", "analysis", "replay")
PHASES = (*GENERATION_PHASES, "update")
COUNTERS = ("rollouts", "groups", "mixed_groups", "pairs", "constructed", "truncated", "parsed", "leaked",
            "replayed", "kept", "analyst_failed")
# Token counts per step: what each phase reads (prompt, context) and what it generates or trains.
TOKEN_COUNTS = (("rollout", "prompt_tokens"), ("rollout", "tokens"), ("analysis", "prompt_tokens"),
                ("analysis", "tokens"), ("replay", "prompt_tokens"), ("replay", "tokens"),
                ("nll", "context_tokens"), ("nll", "tokens"))


def device_synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for the work queued on `device`: `torch.cuda.synchronize` on a CUDA device, else nothing (the CPU
    runs each operation before returning)."""
    if device.type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return lambda: None


class StepStats:
    """Sums over one optimizer step. Counts are global (they come from gathered data), except the NLL's sum and
    count, which each process adds for its own meta-experiences and the end of the step reduces.

    A phase's time is read after `sync` (see `device_synchronizer`), at its start and its end: on a GPU the wall
    clock would otherwise count the kernels a phase launched, not the time they took to run."""

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self.sync = sync
        self.counts: dict[str, float] = {}
        self.time: dict[str, float] = {phase: 0.0 for phase in (*PHASES, "nll")}

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.counts[key] = self.counts.get(key, 0) + value

    @contextmanager
    def timed(self, phase: str):
        start = self.clock()
        try:
            yield
        finally:
            self.time[phase] += self.clock() - start

    def clock(self) -> float:
        """Seconds, once the device has run what was queued on it."""
        self.sync()
        return time.perf_counter()

    def line(self, step: int, nll_sum: float, nll_count: float) -> dict:
        count = lambda key: int(self.counts.get(key, 0))  # noqa: E731
        return {
            "step": step,
            "reward_mean": self.counts.get("reward_sum", 0.0) / max(count("rollouts"), 1),
            "mixed_group_fraction": count("mixed_groups") / max(count("groups"), 1),
            **{key: count(key) for key in COUNTERS},
            "retention_ratio": retention_ratio(count("kept"), count("constructed")),
            "nll": nll_sum / nll_count if nll_count else None,
            "skipped_update": bool(count("skipped_update")),
            **{f"{phase}_{kind}": count(f"{phase}_{kind}") for phase, kind in TOKEN_COUNTS},
            **{f"time_{phase}": round(seconds, 4) for phase, seconds in self.time.items()},
        }


class RunFilesCallback(TrainerCallback):
    """Collects a step's `StepStats` and writes the run files of `run_dir` (on the main process).

    `stats` is what the trainer adds to during a step. At the step's end the NLL is reduced over processes, the
    update's time is the step's wall time less its generation phases, and the line goes to `metrics.jsonl` and,
    as `mel/<key>`, to the trainer's logged metrics (hence to every `report_to` backend). Times are read once the
    accelerator's device has run what was queued on it.
    """

    def __init__(self, run_dir: str | os.PathLike, accelerator, logged_metrics: dict):
        self.accelerator = accelerator
        self.logged_metrics = logged_metrics
        self.sync = device_synchronizer(accelerator.device)
        self.stats = StepStats(self.sync)
        self.metrics_writer = self.experience_writer = None
        self._step_start = self.stats.clock()
        if accelerator.is_main_process:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self.metrics_writer = JsonlWriter(Path(run_dir) / METRICS_FILE)
            self.experience_writer = JsonlWriter(Path(run_dir) / EXPERIENCES_FILE)

    def write_experiences(self, records: list[dict]) -> None:
        if self.experience_writer is not None:
            for record in records:
                self.experience_writer.append(record)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = self.stats.clock()

    def on_step_end(self, args, state, control, **kwargs):
        stats, self.stats = self.stats, StepStats(self.sync)
        generation = sum(stats.time[phase] for phase in GENERATION_PHASES)
        stats.time["update"] = max(0.0, stats.clock() - self._step_start - generation)
        totals = torch.tensor([stats.counts.get("nll_sum", 0.0), stats.counts.get("nll_count", 0.0)],
                              device=self.accelerator.device)
        nll_sum, nll_count = self.accelerator.reduce(totals, reduction="sum").tolist()
        line = stats.line(state.global_step, nll_sum, nll_count)
        if self.metrics_writer is not None:
            self.metrics_writer.append(line)
        for key, value in line.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.logged_metrics[f"mel/{key}"].append(float(value))


class CheckpointMarkerCallback(TrainerCallback):
    """Marks each checkpoint complete once transformers has saved it whole (`on_save` follows the save)."""

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            marker = folder / COMPLETE_MARKER
            with open(marker.with_suffix(".tmp"), "w") as f:
                json.dump({"global_step": state.global_step}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(marker.with_suffix(".tmp"), marker)
