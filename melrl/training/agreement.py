"""Decisions that every process must share, made once on the main process and handed to the others."""

from __future__ import annotations

from typing import Callable, TypeVar

from accelerate.utils import broadcast_object_list

T = TypeVar("T")


def decided_on_main(accelerator, decide: Callable[[], T]) -> T:
    """`decide()` run on the main process only; every process gets its result, or raises with its error.

    For a decision that processes could otherwise make differently (a verifier that times out on one process and
    not on another) where they must then act alike: under ZeRO-3 and FSDP every process has to run the same passes.
    """
    if accelerator.num_processes == 1:
        return decide()
    outcome: list = [None]
    error = None
    if accelerator.is_main_process:
        try:
            outcome[0] = ("ok", decide())
        except Exception as e:
            error, outcome[0] = e, ("error", f"{type(e).__name__}: {e}")
    broadcast_object_list(outcome, from_process=0)
    if error is not None:
        raise error
    status, value = outcome[0]
    if status == "error":
        raise RuntimeError(f"the main process failed to decide: {value}")
    return value
