"""A one-line progress bar for console runs: steps with ETA, and the latest reward in the bar, no log dicts."""

from __future__ import annotations

from transformers.trainer_callback import ProgressCallback


class CompactProgressCallback(ProgressCallback):
    """TRL's progress bar without the per-step dictionary of every logged value."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {key: logs[key] for key in ("reward", "loss") if key in logs}
            if shown:
                self.training_bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)


def use_compact_progress(trainer) -> None:
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(CompactProgressCallback())
