"""The NLL term's own backward pass (`MELTrainer._compute_loss`): whether it takes one, and how under each engine.

It takes its own backward pass before the update's graph is built: one backward over both graphs would hold a second
full set of parameter gradients until both branches reach each parameter, and under reentrant activation
checkpointing (ZeRO-3) would fire a layer's gradient hooks twice.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from accelerate.utils import DistributedType
from transformers.training_args import OptimizerNames


def takes_own_backward(optim: str, accelerator) -> bool:
    """Whether the NLL takes its own backward pass: not under LOMO, which steps inside backward, nor under
    ZeRO-1/2, whose gradient partitions take one backward pass per micro-step."""
    if optim in (OptimizerNames.LOMO, OptimizerNames.ADALOMO):
        return False
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return accelerator.distributed_type != DistributedType.DEEPSPEED or plugin.zero_stage == 3


def own_backward_context(accelerator, model):
    """The context of the NLL's forward and backward. Under DDP, `no_sync`: the backward accumulates its gradients
    locally and the update's backward reduces them with its own. It must hold the forward too, since DDP decides at
    the forward whether the backward all-reduces."""
    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return nullcontext()
    return accelerator.no_sync(model)


def run_own_backward(accelerator, loss: torch.Tensor) -> None:
    """The NLL's own backward pass (inside `own_backward_context`). Its gradients are reduced with the update's
    under DDP and ZeRO-3 (not an accumulation boundary, so DeepSpeed does not step); FSDP reduce-scatters them at
    once, as it keeps no unsharded gradients between passes."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        engine = accelerator.deepspeed_engine_wrapped.engine
        engine.set_gradient_accumulation_boundary(False)
        engine.backward(loss, scale_wrt_gas=False)  # as the Trainer's backward: the loss is scaled already
    else:
        accelerator.backward(loss)
